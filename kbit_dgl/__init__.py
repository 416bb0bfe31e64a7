"""kbit-dgl: knowledge-graph embeddings on DGL with honest evaluation and k-bit inference."""
__version__ = "0.1.0"
