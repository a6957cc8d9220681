"""A checkpoint written the way MDLM's AR baseline is saved, by the real libraries (Lightning's Trainer, omegaconf,
transformers' GPT2TokenizerFast in the hyper-parameters, an EMA dict and a sampler state added in
on_save_checkpoint). Used by tests/test_security_pickle.py where lightning and omegaconf are installed (they are
not edlm dependencies); the module names such a file holds are what edlm.safe_load.LIGHTNING_FOREIGN lists."""

from __future__ import annotations

import json

import torch

from mdlm_reference import ReferenceMDLM, randomize
from test_convert import LENGTH, NB, C, D, H, V


def write_mdlm_style_checkpoint(folder, L, omegaconf, transformers):
    vocab = {chr(c): i for i, c in enumerate(range(33, 33 + V - 3))}
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tok = transformers.GPT2TokenizerFast(vocab_file=str(folder / "vocab.json"), merges_file=str(folder / "merges.txt"))
    # MDLM's config.yaml, abridged: interpolations, lists, _target_ strings, the model section.
    cfg = omegaconf.OmegaConf.create({
        "mode": "train", "diffusion": "absorbing_state", "backbone": "ar", "parameterization": "ar",
        "time_conditioning": False, "T": 0, "subs_masking": False, "seed": 1,
        "loader": {"global_batch_size": 512, "batch_size": "${div_up:${.global_batch_size}, 1}"},
        "training": {"ema": 0.9999, "antithetic_sampling": True, "sampling_eps": 1e-3},
        "optim": {"weight_decay": 0, "lr": 3e-4, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8},
        "model": {"name": "small", "type": "ddit", "hidden_size": D, "cond_dim": C, "length": LENGTH,
                  "n_blocks": NB, "n_heads": H, "scale_by_sigma": True, "dropout": 0.1},
        "noise": {"type": "loglinear", "sigma_min": 1e-4, "sigma_max": 20},
        "lr_scheduler": {"_target_": "transformers.get_constant_schedule_with_warmup", "num_warmup_steps": 2500},
        "trainer": {"_target_": "lightning.Trainer", "devices": [0, 1], "max_steps": 1000000, "precision": "bf16"},
        "wandb": {"project": "text-diffusion", "tags": ["${noise.type}", "${data.train}"]},
        "data": {"train": "openwebtext", "valid": "wikitext103", "tokenizer_name_or_path": "gpt2"},
    })

    class Diffusion(L.LightningModule):
        def __init__(self, config, tokenizer):
            super().__init__()
            self.save_hyperparameters()
            self.backbone = randomize(ReferenceMDLM(V, D, H, C, NB, dit=False), 1).backbone
            self.shadow = [p.detach().clone() + 0.01 for p in self.backbone.parameters()]

        def on_save_checkpoint(self, checkpoint):
            checkpoint["ema"] = {"decay": 0.9999, "num_updates": 1, "shadow_params": self.shadow,
                                 "collected_params": None}
            checkpoint["sampler"] = {"random_state": torch.Generator().get_state()}

        def training_step(self, batch, i):
            return self.backbone.vocab_embed.embedding.sum() * 0

        def configure_optimizers(self):
            opt = torch.optim.AdamW(self.parameters(), lr=3e-4)
            sch = transformers.get_constant_schedule_with_warmup(opt, num_warmup_steps=2500)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sch, "interval": "step"}}

        def train_dataloader(self):
            return torch.utils.data.DataLoader(torch.zeros(8, 3), batch_size=2)

    cb = L.pytorch.callbacks.ModelCheckpoint(dirpath=str(folder / "cb"), save_last=True, every_n_train_steps=1)
    trainer = L.Trainer(max_steps=2, accelerator="cpu", logger=False, callbacks=[cb], enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=str(folder))
    trainer.fit(Diffusion(cfg, tok))
    trainer.save_checkpoint(folder / "ar.ckpt")
    return folder / "ar.ckpt"
