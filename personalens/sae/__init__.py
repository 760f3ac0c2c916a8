"""Sparse autoencoders: load and check SAEs, decompose a persona vector into features, top-activating contexts, causal feature tests."""

from personalens.sae.causal import FeatureSteeringResult, feature_steering_test, feature_vector
from personalens.sae.contexts import FeatureContexts, feature_contexts
from personalens.sae.decompose import Decomposition, decompose
from personalens.sae.layer_sae import LayerSAE
from personalens.sae.load import load_sae, shipped_sae_layers

__all__ = [
    "Decomposition",
    "FeatureContexts",
    "FeatureSteeringResult",
    "LayerSAE",
    "decompose",
    "feature_contexts",
    "feature_steering_test",
    "feature_vector",
    "load_sae",
    "shipped_sae_layers",
]
