"""Which network a config trains, read as sd-scripts users write it, without torch (the API checks it too).

`network_module = "networks.lora"` (or `networks.lora_flux`) is kohya's LoRA, LoCon when conv_dim is set.
`network_module = "lycoris.kohya"` is the LyCORIS library's sd-scripts entry, and `network_args` chooses:
`algo=lora|locon` (LoRA/LoCon), `algo=loha` (Hadamard product), `algo=lokr` (Kronecker product, with `factor`,
`decompose_both`, `full_matrix`), and `dora_wd=True` (DoRA's weight decomposition) on top of any of them.
LyCORIS's "full" preset also trains every convolution (conv_dim defaults to network_dim) and, on SD 1.x/2.x,
conv_in, conv_out and the time embedding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trainer.job.args import arg_flag, arg_value

if TYPE_CHECKING:
    from trainer.job.config import TrainConfig

LYCORIS = "lycoris.kohya"
KOHYA_MODULES = ("networks.lora", "networks.lora_flux")
ALGOS = {"lora": "lora", "locon": "lora", "loha": "loha", "lokr": "lokr"}  # LyCORIS algo → our adapter kind
LYCORIS_ONLY_ARGS = ("algo", "dora_wd", "factor", "decompose_both", "full_matrix", "preset", "wd_on_output")
REFUSED_LYCORIS_ARGS = {
    "use_tucker": "Tucker-decomposed convolutions are not offered",
    "use_cp": "Tucker-decomposed convolutions (use_cp) are not offered",
    "use_conv_cp": "Tucker-decomposed convolutions (use_conv_cp) are not offered",
    "use_scalar": "the trained scalar is not offered",
    "rs_lora": "rank-stabilised scaling is not offered",
    "bypass_mode": "bypass mode is not offered",
    "unbalanced_factorization": "unbalanced LoKr factorisation is not offered",
    "train_norm": "training normalisation layers is not offered",
}


@dataclass(frozen=True)
class NetworkSpec:
    """What each adapted module becomes: its kind (lora, loha, lokr) and the options of that kind."""

    kind: str = "lora"
    dora: bool = False
    lycoris: bool = False
    factor: int = -1
    decompose_both: bool = False
    full_matrix: bool = False

    @classmethod
    def of(cls, cfg: TrainConfig) -> NetworkSpec:
        return cls.of_params(cfg.network_module, cfg.network_args)

    @classmethod
    def of_job(cls, params: dict[str, Any]) -> NetworkSpec:
        """From a stored job's params, without building a whole config."""
        return cls.of_params(params.get("network_module", "networks.lora"), params.get("network_args") or [])

    @classmethod
    def of_params(cls, network_module: str, network_args: list[str]) -> NetworkSpec:
        """From the two keys alone."""
        if network_module != LYCORIS:
            return cls()
        args = network_args
        factor = arg_value(args, "factor")
        return cls(kind=ALGOS.get((arg_value(args, "algo") or "lora").lower(), "lora"),
                   dora=arg_flag(args, "dora_wd"), lycoris=True, factor=int(factor) if factor else -1,
                   decompose_both=arg_flag(args, "decompose_both"), full_matrix=arg_flag(args, "full_matrix"))

    @property
    def label(self) -> str:
        name = {"lora": "LoRA", "loha": "LoHa", "lokr": "LoKr"}[self.kind]
        return f"{name} + DoRA" if self.dora else name


def network_problems(cfg: TrainConfig) -> list[tuple[str, str]]:
    """(field, message) for network choices that cannot be trained as asked."""
    args = cfg.network_args
    if cfg.network_module != LYCORIS:
        given = [key for key in LYCORIS_ONLY_ARGS if arg_value(args, key) is not None]
        if arg_flag(args, "dora_wd"):
            return [("network_args", f"DoRA (dora_wd) needs network_module {LYCORIS}: sd-scripts' "
                                     f"{cfg.network_module} has no weight decomposition")]
        return [("network_args", f"{', '.join(given)} is read by {LYCORIS} only; set network_module to it, or "
                                 f"remove it")] if given else []
    problems = []
    algo = (arg_value(args, "algo") or "lora").lower()
    if algo not in ALGOS:
        problems.append(("network_args", f'algo={algo} is not offered: choose {", ".join(ALGOS)}'))
    if (arg_value(args, "preset") or "full") != "full":
        problems.append(("network_args", "only LyCORIS's preset=full is offered (every layer sd-scripts' LoCon "
                                         "trains, plus conv_in, conv_out and the time embedding on SD 1.x/2.x)"))
    if (arg_value(args, "wd_on_output") or "true").lower() in ("false", "0", "no"):
        problems.append(("network_args", "wd_on_output=False is not offered: DoRA's magnitude is kept per output "
                                         "channel, as diffusers and PEFT read it"))
    factor = arg_value(args, "factor")
    if factor is not None and not factor.lstrip("-").isdigit():
        problems.append(("network_args", f"factor={factor} is not a whole number (-1 means balanced)"))
    problems += [("network_args", f"{key}: {why}") for key, why in REFUSED_LYCORIS_ARGS.items()
                 if arg_flag(args, key)]
    if arg_value(args, "train_blocks") is not None:
        problems.append(("network_args", "train_blocks is read by networks.lora_flux only; lycoris.kohya trains "
                                         "every FLUX block"))
    return problems


PLAIN_COPY = "A plain LoRA copy of any epoch (job page), at a rank you choose, behaves the same everywhere."
NETWORK_TYPES = (
    {"name": "lora", "label": "LoRA (LoCon with conv_dim)", "lycoris": False, "args": [], "caveat": ""},
    {"name": "lycoris_lora", "label": "LoCon (LyCORIS: every layer)", "lycoris": True, "args": ["algo=locon"],
     "caveat": ""},
    {"name": "loha", "label": "LoHa (LyCORIS)", "lycoris": True, "args": ["algo=loha"],
     "caveat": "diffusers has no LoHa reader; A1111, Forge and ComfyUI read it. " + PLAIN_COPY},
    {"name": "lokr", "label": "LoKr (LyCORIS)", "lycoris": True, "args": ["algo=lokr"],
     "caveat": "diffusers reads LoKr only for its newest families (not SD, SDXL or FLUX.1). " + PLAIN_COPY},
    {"name": "dora", "label": "DoRA (LyCORIS LoCon + weight decomposition)", "lycoris": True,
     "args": ["algo=locon", "dora_wd=True"],
     "caveat": "Tools apply DoRA differently: ComfyUI and Forge divide by ‖W‖ instead of ‖W + ΔW‖ and miss the trained "
               "update by 2–4× its size, A1111 1.8 ignores dora_scale, diffusers drops it. " + PLAIN_COPY},
)


def network_type_of(spec: NetworkSpec) -> str:
    """The NETWORK_TYPES name a spec amounts to (a LyCORIS type with DoRA counts as DoRA)."""
    for entry in NETWORK_TYPES:
        offered = NetworkSpec.of_params(LYCORIS if entry["lycoris"] else "networks.lora", entry["args"])
        if (offered.kind, offered.dora, offered.lycoris) == (spec.kind, spec.dora, spec.lycoris):
            return entry["name"]
    return "dora" if spec.dora else "lycoris_lora"
