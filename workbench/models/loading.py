"""Save and load models: workbench directories, Hugging Face directories, weight files.

``save(model, directory)`` writes ``model.safetensors`` and ``model.json`` (the builder spec);
``load(path)`` understands

- a directory with ``model.json`` (written by :func:`save`): rebuild from the spec, load the weights;
- a directory with ``config.json``: a Hugging Face model, wrapped in :class:`HFModel`;
- a ``.safetensors`` file: a state dict, loaded into ``into=`` or into a model rebuilt from a
  sibling ``model.json``;
- a ``.pt`` / ``.pth`` / ``.bin`` file: a state dict read with ``torch.load(weights_only=True)``
  (arbitrary pickled objects are refused), same ``into=`` rule.
"""
from __future__ import annotations

import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

__all__ = ["load", "save", "HFModel"]

WEIGHTS_FILE = "model.safetensors"
SPEC_FILE = "model.json"
_TORCH_SUFFIXES = (".pt", ".pth", ".bin")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json",
                    "spiece.model", "tokenizer.model", "sentencepiece.bpe.model")


# ----------------------------------------------------------------------------- Hugging Face wrapper

def _find_layer_list(model: nn.Module, n_layers: int | None) -> str | None:
    """Path of the first ``nn.ModuleList`` with ``n_layers`` entries (the transformer layers)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and n_layers is not None and len(module) == n_layers:
            return name
    return None


def _find_embeddings(model: nn.Module) -> str | None:
    """Path of the module named ``embeddings``, else the parent of the input embeddings."""
    for name, _ in model.named_modules():
        if name.split(".")[-1] == "embeddings":
            return name
    get = getattr(model, "get_input_embeddings", None)
    emb = get() if callable(get) else None
    for name, module in model.named_modules():
        if module is emb and name:
            parent = name.rpartition(".")[0]
            return parent or name  # parent == the whole model (e.g. GPT-2): use the token embedding itself
    return None


#: how :meth:`HFModel.tokenize` treats a text longer than ``max_length`` tokens
TRUNCATIONS = ("cut", "window")
_SANE_LIMIT = 1_000_000  # tokenizers without a known limit report model_max_length = 1e30


def _position_limit(tokenizer: Any, config: Any) -> int | None:
    """The most tokens the model reads: the smaller of the tokenizer's ``model_max_length`` (when sane) and the
    config's position-embedding count (``max_position_embeddings`` / ``n_positions`` / ``max_sequence_length``)."""
    found = []
    tok_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_max, int) and 0 < tok_max <= _SANE_LIMIT:
        found.append(tok_max)
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        v = getattr(config, key, None)
        if isinstance(v, int) and not isinstance(v, bool) and 0 < v <= _SANE_LIMIT:
            found.append(v)
            break
    return min(found) if found else None


def _sentence_transformers_limit(directory: Path) -> int | None:
    """``max_seq_length`` of a sentence-transformers directory (``sentence_bert_config.json``), if any."""
    try:
        v = json.loads((directory / "sentence_bert_config.json").read_text()).get("max_seq_length")
    except (OSError, ValueError, AttributeError):
        return None
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None


class HFModel(nn.Module):
    """A Hugging Face ``AutoModel`` with a tokenizer and workbench probe points.

    Attributes
    ----------
    model : transformers.PreTrainedModel
    tokenizer : transformers tokenizer or None
    config : transformers.PretrainedConfig
    probe_points : dict
        ``embeddings`` and ``layer0 .. layer{L-1}`` mapped to module paths inside this wrapper
        (e.g. ``model.encoder.layer.3``). For BERT-like models (a module named ``embeddings``) their
        outputs equal the ``output_hidden_states=True`` results. Models without such a module (e.g.
        GPT-2) use the token-embedding module itself, which excludes position embeddings.

    max_length : int or None
        Texts are tokenized to at most this many tokens (special tokens included) by :meth:`tokenize`, which
        every text path uses (``extract``, ``attribute``, fine-tuning). Default: the model's own limit - the
        sentence-transformers ``max_seq_length`` of its directory (``sentence_bert_config.json``) when present
        (256 for all-MiniLM-L6-v2), else :attr:`position_limit` (the tokenizer's ``model_max_length`` when sane,
        capped by the config's ``max_position_embeddings``; 512 for MiniLM); None when neither is known (no
        truncation). Settable (``model.max_length = 512``), up to :attr:`position_limit`.
    truncation : {"cut", "window"}
        What happens to a longer text. ``"cut"`` (default): it is cut to ``max_length`` tokens and
        :meth:`tokenize` warns (how many texts, the longest length, the limit). ``"window"``: it is kept whole
        and :meth:`forward` / :meth:`hidden` / :meth:`pooled` run it as overlapping windows (see
        :meth:`forward`). Settable.

    ``forward`` / ``hidden`` return the last hidden state ``[N, T, D]``; ``pooled`` is the representation
    (attention-masked mean of the last hidden state), used by fine-tuning and the joint-embedding objectives.
    """

    def __init__(self, model: nn.Module, tokenizer: Any = None, config: Any = None, *,
                 max_length: int | None = None, truncation: str = "cut"):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.config = config if config is not None else getattr(model, "config", None)
        self.position_limit = _position_limit(tokenizer, self.config)
        self.max_length = self.position_limit if max_length is None else max_length
        self.truncation = truncation
        self._specials: tuple[int, int] | None = None
        n_layers = next((getattr(self.config, k) for k in ("num_hidden_layers", "n_layer", "num_layers")
                         if isinstance(getattr(self.config, k, None), int)), None)
        points: dict[str, str] = {}
        emb = _find_embeddings(model)
        if emb is not None:
            points["embeddings"] = f"model.{emb}"
        layers = _find_layer_list(model, n_layers)
        if layers is not None:
            points.update({f"layer{i}": f"model.{layers}.{i}" for i in range(n_layers)})
        else:
            import warnings
            warnings.warn(f"could not find the {n_layers} transformer layers of {type(model).__name__} "
                          "(no nn.ModuleList of that length); only the embeddings are probe points. "
                          "Select other modules with select_layers(model, [module paths]).", stacklevel=2)
        self.probe_points = points

    @property
    def max_length(self) -> int | None:
        """Most tokens per text (special tokens included); see the class docstring."""
        return self._max_length

    @max_length.setter
    def max_length(self, value: int | None) -> None:
        self._max_length = self._check_max_length(value, "max_length")

    @property
    def truncation(self) -> str:
        """``"cut"`` or ``"window"``: how a text longer than :attr:`max_length` tokens is treated."""
        return self._truncation

    @truncation.setter
    def truncation(self, value: str) -> None:
        if value not in TRUNCATIONS:
            raise ValueError(f"truncation must be one of {list(TRUNCATIONS)} ('cut': cut long texts to max_length "
                             f"tokens; 'window': run them as overlapping windows), got {value!r}")
        self._truncation = value

    def _check_max_length(self, value: Any, name: str) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be a positive int (tokens per text) or None, got {type(value).__name__}")
        if value < 2:
            raise ValueError(f"{name} must be at least 2 tokens, got {value}")
        limit = getattr(self, "position_limit", None)
        if limit is not None and value > limit:
            raise ValueError(f"{name}={value} exceeds the {limit} positions this model reads; use at most {limit}, "
                             "or truncation='window' to run longer texts as windows")
        return value

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Last hidden state ``[N, T, D]``.

        With ``truncation="window"`` and ``T > max_length`` (texts tokenized whole), each row's real tokens are
        run as windows of ``max_length`` tokens: the leading and trailing special tokens (e.g. ``[CLS]`` and
        ``[SEP]``) are put around every window, and the ``w = max_length - specials`` content tokens of a window
        advance by ``stride = max(1, w // 2)`` (half-overlapping; the last window is aligned to the end, so
        every window is full). Each token's state is the mean of its states over the windows that contain it,
        ``h_t = (1/|W_t|) sum_{j in W_t} h_t^(j)``, and a special token's state is the mean over all the row's
        windows; padding positions are 0. So :meth:`pooled` weights every token once (the sliding-window
        variant of the common "chunk and average" pooling of long documents, e.g. Hugging Face's ``stride``
        for long contexts), and a text of at most ``max_length`` tokens gives exactly the model's own output.
        Tokens only see the context inside their window. Hooks inside the model would see window pieces, so
        this refuses to run while any are registered (``extract`` / ``attribute`` of inner layers): use
        ``truncation="cut"`` for those.
        """
        limit = self.max_length
        if self.truncation == "window" and limit is not None and input_ids.shape[1] > limit:
            return self._windowed(input_ids, attention_mask, limit)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask)
        return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]

    def _special_counts(self) -> tuple[int, int]:
        """How many special tokens the tokenizer puts before and after a text (``[CLS] .. [SEP]``: 1, 1)."""
        if self._specials is None:
            p = s = 0
            if self.tokenizer is not None:
                full = list(self.tokenizer("word")["input_ids"])
                bare = list(self.tokenizer("word", add_special_tokens=False)["input_ids"])
                at = next((i for i in range(len(full) - len(bare) + 1) if full[i:i + len(bare)] == bare), None)
                if bare and at is not None:
                    p, s = at, len(full) - at - len(bare)
            self._specials = (p, s)
        return self._specials

    def _windowed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, limit: int) -> torch.Tensor:
        hooked = [name for name, m in self.model.named_modules() if m._forward_hooks or m._forward_pre_hooks]
        if hooked:
            raise ValueError(f"texts of {input_ids.shape[1]} tokens exceed max_length={limit} and truncation="
                             f"'window' runs them as windows, but hooks are registered inside the model "
                             f"({hooked[:3]}), which would see window pieces instead of whole texts (extract / "
                             "attribute of inner layers). Set model.truncation = 'cut' (long texts are cut to "
                             "max_length, with a warning) or use model.pooled / model.hidden for windowed outputs")
        n, t = input_ids.shape
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask.to(input_ids.device)
        pre, suf = self._special_counts()
        special = torch.tensor(sorted(set(getattr(self.tokenizer, "all_special_ids", None) or [])),
                               dtype=input_ids.dtype, device=input_ids.device)
        windows: list[tuple[int, torch.Tensor]] = []  # (row, the positions in that row a window reads)
        for i in range(n):
            pos = mask[i].nonzero().flatten()
            if len(pos) <= limit:
                windows.append((i, pos))
                continue
            row = input_ids[i, pos]
            p = pre if bool(torch.isin(row[:pre], special).all()) else 0
            s = suf if bool(torch.isin(row[len(row) - suf:], special).all()) else 0
            body = pos[p:len(pos) - s]
            w = limit - p - s
            if w < 1:
                raise ValueError(f"max_length={limit} leaves no room for text between {p + s} special tokens")
            stride = max(1, w // 2)
            starts = list(range(0, len(body) - w, stride)) + [len(body) - w]
            windows += [(i, torch.cat([pos[:p], body[a:a + w], pos[len(pos) - s:]])) for a in starts]
        pad = getattr(self.tokenizer, "pad_token_id", None) or 0
        width = max(len(q) for _, q in windows)
        dim, states = None, []
        for c in range(0, len(windows), max(n, 1)):  # at most n windows per forward pass
            chunk = windows[c:c + max(n, 1)]
            ids = torch.full((len(chunk), width), pad, dtype=input_ids.dtype, device=input_ids.device)
            wmask = torch.zeros_like(ids)
            for j, (i, q) in enumerate(chunk):
                ids[j, :len(q)] = input_ids[i, q]
                wmask[j, :len(q)] = 1
            out = self.model(input_ids=ids, attention_mask=wmask)
            h = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
            dim = h.shape[-1]
            states += [h[j, :len(q)] for j, (_, q) in enumerate(chunk)]
        flat = torch.cat([i * t + q for i, q in windows])
        total = torch.zeros(n * t, dim, dtype=states[0].dtype, device=states[0].device)
        total = total.index_add(0, flat, torch.cat(states))
        count = torch.zeros(n * t, dtype=states[0].dtype, device=states[0].device).index_add(
            0, flat, torch.ones(len(flat), dtype=states[0].dtype, device=states[0].device))
        return (total / count.clamp(min=1.0)[:, None]).view(n, t, dim)

    def hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Last hidden state ``[N, T, D]`` (the same as :meth:`forward`; the name the workbench Transformer uses)."""
        return self.forward(input_ids, attention_mask)

    def pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The model's representation ``[N, D]``: the **attention-masked mean of the last hidden state** over the
        real tokens, ``sum_t m_t h_t / max(1, sum_t m_t)`` (every token when ``attention_mask`` is None; an
        all-padding row gives zeros). Special tokens ([CLS], [SEP]) count as real tokens. This is the mean pooling
        of sentence-transformers models such as all-MiniLM-L6-v2 (before their L2 normalisation); it is what
        :func:`workbench.train.objectives.representation` returns for this wrapper, so fine-tuning
        (``workbench.train.evaluate(run, methods=["finetune"])``) trains a linear head on it."""
        h = self.hidden(input_ids, attention_mask)
        if attention_mask is None:
            return h.mean(dim=1)
        w = attention_mask.to(h.device).bool().to(h.dtype)[:, :, None]
        return (h * w).sum(dim=1) / w.sum(dim=1).clamp(min=1.0)

    def tokenize(self, texts: str | list[str], max_length: int | None = None) -> dict[str, torch.Tensor]:
        """Tokenise with padding; returns ``input_ids`` and ``attention_mask`` (LongTensor, ``[N, T]``).

        ``max_length`` (default :attr:`max_length`, the model's own limit) caps the tokens per text, special
        tokens included. With :attr:`truncation` ``"cut"`` a longer text is cut to it and a ``UserWarning``
        says how many texts were cut, the longest length and the limit; with ``"window"`` texts are kept whole
        (``T`` may exceed the limit) and :meth:`forward` runs them as windows.
        """
        if self.tokenizer is None:
            raise ValueError("this model was loaded without a tokenizer (no tokenizer files in its directory); "
                             "pass input_ids directly or set model.tokenizer")
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, (list, tuple)) or not all(isinstance(t, str) for t in texts):
            raise TypeError("texts must be a string or a list of strings")
        limit = self.max_length if max_length is None else self._check_max_length(max_length, "max_length")
        texts = list(texts)
        if limit is None or self.truncation == "window":
            enc = self.tokenizer(texts, padding=True, truncation=False, return_tensors="pt", verbose=False)
        else:
            lengths = [len(ids) for ids in self.tokenizer(texts, truncation=False, verbose=False)["input_ids"]]
            cut = [n for n in lengths if n > limit]
            if cut:
                import warnings
                warnings.warn(f"{len(cut)} of {len(texts)} texts are longer than max_length={limit} tokens (longest: "
                              f"{max(cut)} tokens) and were cut to {limit}; their representations ignore the rest. "
                              f"Set model.max_length (up to {self.position_limit}) or model.truncation = 'window' "
                              "(overlapping windows, averaged), or shorten the texts", UserWarning, stacklevel=2)
            enc = self.tokenizer(texts, padding=True, truncation=True, max_length=limit, return_tensors="pt")
        device = next(self.model.parameters()).device
        return {"input_ids": enc["input_ids"].long().to(device),
                "attention_mask": enc["attention_mask"].long().to(device)}


def _load_hf(directory: Path, trust_remote_code: bool, device: str) -> HFModel:
    try:
        from transformers import AutoConfig, AutoModel, AutoTokenizer
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(f"{directory} is a Hugging Face model directory; install transformers "
                          "(pip install 'workbench[hf]') to load it") from err
    kwargs = dict(trust_remote_code=trust_remote_code, local_files_only=True)
    config = AutoConfig.from_pretrained(directory, **kwargs)
    model = AutoModel.from_pretrained(directory, config=config, **kwargs)
    tokenizer = None
    if any((directory / f).exists() for f in _TOKENIZER_FILES):
        tokenizer = AutoTokenizer.from_pretrained(directory, **kwargs)
    limit = _position_limit(tokenizer, config)
    st_limit = _sentence_transformers_limit(directory)  # the length sentence-transformers models were trained for
    max_length = st_limit if st_limit is not None and (limit is None or st_limit <= limit) else None
    return HFModel(model, tokenizer, config, max_length=max_length).to(device).eval()


# ----------------------------------------------------------------------------- state dicts

def _load_into(model: nn.Module, state: Mapping[str, torch.Tensor], source: Path) -> nn.Module:
    """Strict load with a readable error naming missing and unexpected keys."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"into must be a torch.nn.Module, got {type(model).__name__}")
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(f"the weights in {source} do not fit {type(model).__name__}: "
                         f"missing keys {missing[:10]}{' ...' if len(missing) > 10 else ''} ({len(missing)}), "
                         f"unexpected keys {unexpected[:10]}{' ...' if len(unexpected) > 10 else ''} "
                         f"({len(unexpected)}); build the model with the same options as the saved one")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:  # shape mismatches
        raise ValueError(f"the weights in {source} do not fit {type(model).__name__}: {err}") from None
    return model


def _read_torch_file(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (EOFError, KeyError, RuntimeError, ValueError, UnicodeDecodeError, OSError) as err:
        raise ValueError(f"{path} is not a readable torch weights file ({type(err).__name__}: "
                         f"{str(err).splitlines()[0][:160] if str(err) else 'no detail'}); it is truncated, damaged or "
                         "of another format — save the state dict again (torch.save(model.state_dict(), path))"
                         ) from None
    except pickle.UnpicklingError as err:
        text = str(err)
        detail = " ".join(text[text.find("WeightsUnpickler error:"):].split("\n\nCheck")[0].split()) or "refused"
        raise ValueError(f"{path} is not a plain state dict: torch.load(weights_only=True) refused it ({detail}). "
                         "It will not be unpickled, because unpickling arbitrary objects can run code. Re-save the "
                         "weights as a state dict: torch.save(model.state_dict(), path) or "
                         "workbench.models.save(model, directory).") from None
    state = _as_state_dict(obj)
    if state is None:
        raise ValueError(f"{path} holds a {type(obj).__name__}, not a state dict (a mapping of names to tensors); "
                         "save model.state_dict() instead")
    return state


def _as_state_dict(obj: Any) -> dict[str, torch.Tensor] | None:
    def plain(o):
        return isinstance(o, Mapping) and o and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                   for k, v in o.items())
    if plain(obj):
        return dict(obj)
    if isinstance(obj, Mapping):  # a checkpoint such as {"model": state_dict, "optimizer": ..., "step": ...}
        for key in ("state_dict", "model_state_dict", "model"):
            if plain(obj.get(key)):
                return dict(obj[key])
    return None


def _rebuild(spec_path: Path) -> nn.Module:
    from . import build  # late import: build lives in the package __init__

    try:
        spec = json.loads(spec_path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{spec_path} is not valid JSON ({err})") from None
    if not isinstance(spec, dict) or "name" not in spec:
        raise ValueError(f"{spec_path} must hold a model spec {{'name': ..., 'options': {{...}}}}, got {spec!r}")
    return build(spec["name"], spec.get("options") or {})


# ----------------------------------------------------------------------------- public API

def load(path: str | os.PathLike, *, into: nn.Module | None = None, trust_remote_code: bool = False,
         device: str | torch.device = "cpu") -> nn.Module:
    """Load a model (or weights into ``into``) from ``path``.

    Parameters
    ----------
    path : str or Path
        A directory written by :func:`save`, a Hugging Face directory (``config.json``), a
        ``.safetensors`` file, or a ``.pt`` / ``.pth`` / ``.bin`` state-dict file.
    into : nn.Module, optional
        Load the weights of a file (or of a :func:`save` directory) into this model, strictly, and
        return it. Its train/eval mode is left unchanged.
    trust_remote_code : bool, default False
        Passed to Hugging Face ``from_pretrained``; only enable it for code you trust.
    device : str or torch.device, default "cpu"

    Returns
    -------
    nn.Module
        Newly built models are returned in eval mode.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        Unknown file kind, weights that do not fit the model (missing/unexpected keys listed), a weight
        file without ``into=`` or a sibling ``model.json``, or a pickle that is not a plain state dict.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a file or directory path, got {type(path).__name__}")
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"no such file or directory: {str(path)!r}")

    if path.is_dir():
        if (path / SPEC_FILE).exists():
            return load(path / WEIGHTS_FILE, into=into, device=device)
        if (path / "config.json").exists():
            if into is not None:
                raise ValueError(f"{path} is a Hugging Face directory; into= is not used for it (drop into=)")
            try:
                json.loads((path / "config.json").read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise ValueError(f"{path / 'config.json'} is not valid JSON ({err}); the Hugging Face directory "
                                 f"{path} is damaged — download or save the model again") from None
            return _load_hf(path, trust_remote_code, str(device))
        if into is not None and (path / WEIGHTS_FILE).exists():
            return load(path / WEIGHTS_FILE, into=into, device=device)
        raise ValueError(f"{path} is neither a workbench model directory ({SPEC_FILE} + {WEIGHTS_FILE}, written "
                         f"by workbench.models.save) nor a Hugging Face directory (config.json); it contains "
                         f"{sorted(p.name for p in path.iterdir())[:20]}")

    suffix = path.suffix.lower()
    if suffix in (".safetensors",) + _TORCH_SUFFIXES and path.stat().st_size == 0:
        raise ValueError(f"{path} is empty (0 bytes): the weights were never written or were lost; save the model "
                         "again (workbench.models.save)")
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path), device="cpu")
        except Exception as err:  # safetensors raises its own error type for damaged files
            raise ValueError(f"{path} is not a readable safetensors file ({type(err).__name__}: {err}); it is "
                             "truncated, damaged or of another format — save the weights again "
                             "(workbench.models.save or safetensors.torch.save_file)") from None
    elif suffix in _TORCH_SUFFIXES:
        state = _read_torch_file(path)
    else:
        raise ValueError(f"cannot load {path}: unknown file type {suffix!r}; accepted: a directory, .safetensors, "
                         f"{', '.join(_TORCH_SUFFIXES)}")

    if into is not None:
        return _load_into(into, state, path).to(device)
    spec_path = path.with_name(SPEC_FILE)
    if spec_path.exists():
        return _load_into(_rebuild(spec_path), state, path).to(device).eval()
    raise ValueError(f"{path} holds only weights; pass the model to load them into: "
                     f"load({str(path)!r}, into=workbench.models.build(...)), or keep a {SPEC_FILE} next to it")


def _atomic_write(target: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save(model: nn.Module, directory: str | os.PathLike) -> Path:
    """Write ``model.safetensors`` and ``model.json`` (``model.spec``) into ``directory``.

    Both files are written to a temporary file first and moved into place (``os.replace``), so a
    crash never leaves a half-written file. ``load(directory)`` rebuilds the model.

    Returns
    -------
    Path
        The directory.
    """
    from safetensors.torch import save_file

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    spec = getattr(model, "spec", None)
    if not isinstance(spec, dict) or "name" not in spec:
        raise ValueError(f"{type(model).__name__} has no builder spec (model.spec), so it cannot be rebuilt; "
                         "build it with workbench.models.build(...), or save only its weights with "
                         "safetensors.torch.save_file(model.state_dict(), path) and reload them with "
                         "workbench.models.load(path, into=model)")
    try:
        spec_text = json.dumps({"name": spec["name"], "options": spec.get("options", {})}, indent=2)
    except TypeError as err:
        raise ValueError(f"model.spec is not JSON-serialisable ({err}); use plain numbers, strings and lists") from None
    directory = Path(directory).expanduser()
    directory.mkdir(parents=True, exist_ok=True)
    # clone: safetensors refuses tensors that share memory (e.g. tied weights)
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    _atomic_write(directory / WEIGHTS_FILE, lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
    _atomic_write(directory / SPEC_FILE, lambda tmp: Path(tmp).write_text(spec_text + "\n"))
    return directory
