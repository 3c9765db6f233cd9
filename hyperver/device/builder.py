"""Server side: a per-user model (theta + threshold) -> a signed artifact, from cached templates."""
from __future__ import annotations

from typing import Any

from ..config import Config
from .artifact import build_artifact
from .signing import Signer, load_signer
from .templates import TemplateStore


class ArtifactBuilder:
    """Holds the signing key and the template cache; ``build`` costs a gather + a signature."""

    def __init__(self, cfg: Config, signer: Signer | None = None, store: TemplateStore | None = None):
        self.signer = signer or load_signer(cfg)
        self.store = store or TemplateStore(cfg.template_dir)
        self.runtime = str(cfg.get_path("artifacts.runtime"))
        self.precision = str(cfg.get_path("artifacts.precision"))

    def warm(self, spec, variants: list[tuple[str, str]]) -> None:
        """Load (or build once) the templates a deployment serves, before the first request."""
        for runtime, precision in variants:
            self.store.get(spec, runtime, precision)

    def build(self, user, runtime: str | None = None, precision: str | None = None,
              meta: dict[str, Any] | None = None) -> bytes:
        """``user``: a hyperver.hypernet.model_io.UserModel (theta, spec, threshold)."""
        template = self.store.get(user.spec, runtime or self.runtime, precision or self.precision)
        return build_artifact(template, user.theta, user.threshold, self.signer, meta)
