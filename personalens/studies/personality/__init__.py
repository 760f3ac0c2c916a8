"""Personality studies: self-report questionnaires, Big Five (OCEAN) algebra, dynamic-steering ranking."""
