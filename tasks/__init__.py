"""Task plug-ins (data loading, tokenization, metrics) built on the latentebm core."""
