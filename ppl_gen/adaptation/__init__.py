"""Domain adaptation (Ganin et al. JMLR 2016): gradient reversal, DANN and its trainer,
proxy A-distance and feature embeddings."""
