"""kbit-dgl: knowledge-graph embeddings on DGL with honest evaluation and k-bit inference."""
import os as _os

# ogb's import runs a version check over the network ("outdated"); offline it only warns, slowly.
_os.environ.setdefault("OUTDATED_IGNORE", "1")

__version__ = "0.1.0"
