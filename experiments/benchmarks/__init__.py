"""`make bench`: personalens's throughput side by side with the references (see README.md here)."""
