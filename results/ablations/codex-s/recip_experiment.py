"""Experiment: reciprocal relations (tail-only training on train + inverse triples)."""
import json, sys, dataclasses, torch
from kbit_dgl.config import Config
from kbit_dgl.data import load_dataset
from kbit_dgl.train import trainer

model, out = sys.argv[1], sys.argv[2]
kg = load_dataset("codex-s", "/work/shared/data")
R = kg.num_relations
aug = lambda t: torch.cat([t, torch.stack([t[:, 2], t[:, 1] + R, t[:, 0]], 1)])
kg2 = dataclasses.replace(kg, train=aug(kg.train), valid=aug(kg.valid), test=aug(kg.test), num_relations=2 * R,
                          relation_names=kg.relation_names + [n + "_inv" for n in kg.relation_names], _filter=None)
real = trainer.train_step
trainer.train_step = lambda m, p, c, g, d, *a, **k: real(m, p, c, g, "tail", *a, **k)
config = Config()
config.model.name = model
config.apply_overrides(["train.num_threads=1"] + sys.argv[3:])
metrics = trainer.train(config, kg2, out, overwrite=True, progress=False)
print(json.dumps({k: metrics["test"][k] for k in metrics["test"] if "tail" in k or k == "mrr"}))
