"""Training character agents: SFT and DPO with TRL and PEFT (`sft.py`, `dpo.py`), the
data and loss mask (`data.py`), runs as named models (`runs.py`); see docs/training.md."""
