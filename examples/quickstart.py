"""kbit-dgl from Python: train, evaluate, predict by name, quantize to 4 bits, export, reload.

    python examples/quickstart.py [--out FOLDER]

Runs on the built-in KG (no download), in about 30 s on 2 CPU cores; it prints how long it took.
With a dataset folder (--dataset path/to/kg or a known name under $KBIT_DGL_DATA) it runs there.
"""
import argparse
import tempfile
import time

from kbit_dgl import api
from kbit_dgl.export import load_exported

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--dataset", default="synthetic")
parser.add_argument("--out", default=None, help="folder for the runs (default: a temporary folder)")
parser.add_argument("--epochs", type=int, default=20)
args = parser.parse_args()
started = time.time()
out = args.out or tempfile.mkdtemp(prefix="kbit-dgl-quickstart-")

# 1. train RotatE; every config key is a keyword (dim, lr, max_epochs, ... or section__key)
run = api.train(dataset=args.dataset, model="rotate", out=f"{out}/rotate", dim=64, lr=0.01, max_epochs=args.epochs,
                     valid_every=5, progress=False)
print(run)
print("test MRR", round(run.metrics["test"]["mrr"], 4), "Hits@10", round(run.metrics["test"]["hits@10"], 4))

# 2. predict by name: the tails of (person_0, lives_in, ?)
for row in run.predict("lives_in", head=run.kg.entity_names[0], top=3):
    print(f"  {row['entity']:<12} {row['score']:8.3f} {row['known']}")

# 3. quantize to 4-bit NF4 codes and evaluate the packed tables
packed = run.quantize(f"{out}/rotate-nf4", bits=4, dtype="quantile")
quant = packed.evaluate("test")
print(f"4-bit: test MRR {quant['mrr']:.4f} in {quant['quant']['total']:,} bytes "
      f"({quant['quant']['ratio_to_fp32']:.3f} of fp32)")

# 4. export the embeddings (DGL-KE's .npy layout) and reload them: the same scores
paths = run.export(f"{out}/exported", format="npy")
model, entity_names, relation_names = load_exported(f"{out}/exported")
reloaded = api.evaluate(api.Run(run.path, run.config, run.kg, model), "test")
assert reloaded["mrr"] == run.evaluate("test")["mrr"], "exported embeddings score as the run does"
print("exported", sorted(paths), "- reloaded test MRR", round(reloaded["mrr"], 4))
print(f"done in {time.time() - started:.0f} s; runs in {out}")
