"""Model configuration: the reference's `HGRNBitConfig` (config.json, model_type "hgrn_bit").

Field names and defaults follow the reference (ridgerchu/matmulfreellm, hgrn_bit/configuration).
Fields this package does not know are kept in `extra` and written back unchanged.
"""
import dataclasses
import json
import math
from pathlib import Path


@dataclasses.dataclass
class HGRNBitConfig:
    vocab_size: int = 32000           # Mistral tokenizer in the paper
    hidden_size: int = 2048           # d
    num_hidden_layers: int = 24       # L
    num_heads: int = 1                # heads only reshape the element-wise recurrence
    hidden_ratio: int = 4             # GLU width before the 2/3 and the rounding to 256
    intermediate_size: int | None = None  # None: derived from hidden_ratio (see `intermediate`)
    rms_norm_eps: float = 1e-6        # eps of attn_norm, mlp_norm and the final norm
    max_position_embeddings: int = 2048
    use_lower_bound: bool = True      # learned, layer-increasing floor on the forget gate
    attn_mode: str = "fused_recurrent"
    expand_ratio: int = 1
    use_short_conv: bool = False
    conv_size: int = 4
    share_conv_kernel: bool = True
    hidden_act: str = "swish"
    bos_token_id: int | None = 1
    eos_token_id: int | None = 2
    pad_token_id: int | None = None
    tie_word_embeddings: bool = False
    initializer_range: float = 0.02
    fuse_cross_entropy: bool = True
    use_cache: bool = True
    model_type: str = "hgrn_bit"
    extra: dict = dataclasses.field(default_factory=dict)  # unknown config.json keys, kept

    @property
    def intermediate(self):
        """GLU inner width: the reference's rule 256 * ceil(int(d * ratio * 2/3) / 256)."""
        if self.intermediate_size is not None:
            return self.intermediate_size
        return 256 * math.ceil(int(self.hidden_size * self.hidden_ratio * 2 / 3) / 256)

    def check_supported(self):
        """Raise ValueError for reference options this package does not implement."""
        unsupported = {
            "model_type": (self.model_type, "hgrn_bit"),
            "expand_ratio": (self.expand_ratio, 1),
            "use_short_conv": (self.use_short_conv, False),
            "tie_word_embeddings": (self.tie_word_embeddings, False),
            "hidden_act": (self.hidden_act, "swish"),
        }
        for name, (got, want) in unsupported.items():
            if got != want:
                raise ValueError(f"config.json: {name}={got!r} is not supported (only {want!r})")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"config.json: hidden_size {self.hidden_size} is not divisible "
                             f"by num_heads {self.num_heads}")

    @classmethod
    def from_dict(cls, d):
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        kwargs = {k: v for k, v in d.items() if k in known}
        extra = {k: v for k, v in d.items() if k not in known}
        return cls(**kwargs, extra=extra)

    def to_dict(self):
        d = dataclasses.asdict(self)
        extra = d.pop("extra")
        d.update(extra)
        return dict(sorted(d.items()))

    @classmethod
    def load(cls, path):
        """Read config.json (a file or a checkpoint directory holding one)."""
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        try:
            d = json.loads(path.read_text())
        except FileNotFoundError:
            raise ValueError(f"{path}: config.json not found") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
        return cls.from_dict(d)

    def save(self, path):
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")


def preset(name):
    """The paper's model sizes (Table 1; vocabulary 32k), and a 13B shape for speed studies.

    The 13B shape is Llama-13B's (d=5120, L=40); the paper benchmarks a 13B MatMul-free model
    with random weights without giving its shape.
    """
    shapes = {"370M": (1024, 24), "1.3B": (2048, 24), "2.7B": (2560, 32), "13B": (5120, 40)}
    if name not in shapes:
        raise ValueError(f"unknown model size {name!r}: choose one of {', '.join(shapes)}")
    d, n_layers = shapes[name]
    return HGRNBitConfig(hidden_size=d, num_hidden_layers=n_layers)


PRESETS = ("370M", "1.3B", "2.7B", "13B")
