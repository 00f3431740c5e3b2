"""`charforge run CONFIG.yaml`: the main job from one declarative file (see `config`
for the file, `run` for the order and resumption, `summary` for the closing table)."""

from charforge.pipeline.config import RunConfig, load_config
from charforge.pipeline.run import Pipeline, PipelineRun

__all__ = ["Pipeline", "PipelineRun", "RunConfig", "load_config"]
