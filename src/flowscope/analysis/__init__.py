"""Latent-space analysis: coherence, attribute directions, class fits, clustering."""
