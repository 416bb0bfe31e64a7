"""k-bit inference for KGE tables: codebooks, blockwise quantisers, bit packing, quantized tables.

Flow: a trained ``KGEModel`` -> :func:`quantize_model` (per-decoder table specs) ->
:class:`QuantizedKGEModel` (its tables are :class:`QuantizedEmbedding`: packed codes + block
scales, decoded on the fly) -> the same ``kbit_dgl.eval.evaluate`` / ``kbit_dgl.predict`` code.
:mod:`kbit_dgl.runs` does this for run folders (``quantize_run``, ``load_any_run``), :mod:`.qat`
trains through the quantiser. Nothing here imports DGL.
"""
from .codebooks import FLOAT_FORMATS, codebook, normal_float  # noqa: F401
from .embedding import QuantizedEmbedding  # noqa: F401
from .model import QuantizedKGEModel, quantize_model, table_specs  # noqa: F401
from .packing import pack_bits, packed_bytes, unpack_bits  # noqa: F401
from .qat import FakeQuantize, attach_fake_quant, fake_quantize  # noqa: F401
from .quantizers import DTYPES, QuantSpec, quantize_dequantize, quantize_table, table_nbytes  # noqa: F401
from .storage import load_quantized_model, quantize_tables, save_quantized_model, saved_tensor_bytes  # noqa: F401
