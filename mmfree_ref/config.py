"""Model configuration: the reference's `HGRNBitConfig` (config.json, model_type "hgrn_bit").

Field names and defaults follow the reference (ridgerchu/matmulfreellm, hgrn_bit/configuration).
Fields this package does not know are kept in `extra` and written back unchanged.

Every field is checked when a config is made (`__post_init__`), whichever way it is made (the
command line, `from_dict`, `load`, `dataclasses.replace`): its type, its range, and the relations
between fields, so that a bad config.json fails here in one line naming the field, the value and
what is allowed, and not later as a ZeroDivisionError or a NaN deep in the forward.
"""
import dataclasses
import json
import math
import numbers
from pathlib import Path

from mmfree_ref.formats.atomic import atomic_write


class ConfigError(ValueError):
    """A config field of the wrong type or range; the message starts with the field's name."""


def _is_int(v):
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_number(v):
    """A finite real number; integers are finite (math.isfinite overflows on 10**400)."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and (
        isinstance(v, numbers.Integral) or math.isfinite(v))


# kind -> (test, what is allowed). Booleans are not integers here, although Python says they
# are: `"hidden_size": true` is a mistake, not a width of 1.
_KINDS = {
    "positive int": (lambda v: _is_int(v) and v >= 1, "a positive integer"),
    "positive int or null": (lambda v: v is None or (_is_int(v) and v >= 1),
                             "a positive integer or null"),
    "token id or null": (lambda v: v is None or (_is_int(v) and v >= 0),
                         "a token id (an integer >= 0) or null"),
    "positive number": (lambda v: _is_number(v) and v > 0, "a finite number > 0"),
    "number >= 0": (lambda v: _is_number(v) and v >= 0, "a finite number >= 0"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "str": (lambda v: isinstance(v, str), "a string"),
}


def _shown(value):
    """A value as the user wrote it in config.json: "512" (a string), true, null, [1, 2]."""
    try:
        return json.dumps(value)
    except (TypeError, ValueError):      # not a JSON value (an object made in Python)
        return repr(value)


# config.json field -> its kind in _KINDS (every field of HGRNBitConfig but `extra`)
FIELD_KINDS = {
    "vocab_size": "positive int", "hidden_size": "positive int",
    "num_hidden_layers": "positive int", "num_heads": "positive int",
    "hidden_ratio": "positive number", "intermediate_size": "positive int or null",
    "rms_norm_eps": "positive number", "max_position_embeddings": "positive int",
    "use_lower_bound": "bool", "attn_mode": "str", "expand_ratio": "positive int",
    "use_short_conv": "bool", "conv_size": "positive int", "share_conv_kernel": "bool",
    "hidden_act": "str", "bos_token_id": "token id or null",
    "eos_token_id": "token id or null", "pad_token_id": "token id or null",
    "tie_word_embeddings": "bool", "initializer_range": "number >= 0",
    "fuse_cross_entropy": "bool", "use_cache": "bool", "model_type": "str",
}


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

    def __post_init__(self):
        for name, kind in FIELD_KINDS.items():
            value = getattr(self, name)
            test, allowed = _KINDS[kind]
            if not test(value):
                raise ConfigError(f"{name} must be {allowed}, got {_shown(value)}")
            if _is_int(value):
                setattr(self, name, int(value))       # NumPy integers -> int, for to_dict
        if not isinstance(self.extra, dict):
            raise ConfigError(f"extra must be a dict of unknown config.json keys, got "
                              f"{type(self.extra).__name__}")
        if self.hidden_size % self.num_heads:
            raise ConfigError(f"hidden_size {self.hidden_size} is not divisible by num_heads "
                              f"{self.num_heads} (each head takes hidden_size / num_heads "
                              f"channels)")
        if self.intermediate < 1:
            raise ConfigError(f"hidden_size {self.hidden_size} with hidden_ratio "
                              f"{_shown(self.hidden_ratio)} gives a GLU width of "
                              f"{self.intermediate} (256 * ceil(int(d * ratio * 2/3) / 256)); "
                              f"raise hidden_ratio or set intermediate_size")

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

    @classmethod
    def from_dict(cls, d, source="config.json"):
        """d: the parsed config.json -> HGRNBitConfig, or ValueError "source: field ..."."""
        if not isinstance(d, dict):
            raise ValueError(f"{source}: must hold a JSON object of fields "
                             f"({{\"hidden_size\": ..., ...}}), got {_json_kind(d)}")
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        kwargs = {k: v for k, v in d.items() if k in known}
        extra = {k: v for k, v in d.items() if k not in known}
        try:
            return cls(**kwargs, extra=extra)
        except ConfigError as e:
            raise ValueError(f"{source}: {e}") from None

    def to_dict(self):
        d = dataclasses.asdict(self)
        extra = d.pop("extra")
        d.update(extra)
        return dict(sorted(d.items()))

    @classmethod
    def load(cls, path):
        """Read config.json (a file or a checkpoint directory holding one).

        A missing file, text that is not UTF-8 or not JSON, and a bad field are ValueErrors
        naming the file; other operating-system errors (permissions) are left as they are.
        """
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ValueError(f"{path}: config.json not found") from None
        try:
            d = json.loads(data.decode("utf-8-sig"))
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}: not UTF-8 text (byte {e.start} is 0x{data[e.start]:02x}); "
                             f"config.json must be UTF-8 JSON") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
        return cls.from_dict(d, source=str(path))

    def save(self, path):
        with atomic_write(path) as f:
            f.write((json.dumps(self.to_dict(), indent=2) + "\n").encode())


def _json_kind(value):
    """The JSON name of a parsed value's type: 'a list', 'a string', 'null' ..."""
    kinds = ((bool, "true or false"), (dict, "an object"), (list, "a list"), (str, "a string"),
             (numbers.Real, "a number"))
    if value is None:
        return "null"
    return next((f"{name} ({_shown(value)[:40]})" for t, name in kinds if isinstance(value, t)),
                type(value).__name__)


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
