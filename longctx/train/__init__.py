"""Training: the loop (loop.py), AdamW and LR schedules, the chunked lm-head loss, DCP
checkpoints, metrics, and the `pretrain` / `extend` / `export` commands.

    from longctx.train.loop import Trainer, Stage
"""
