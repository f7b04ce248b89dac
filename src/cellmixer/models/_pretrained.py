"""DINOv2 weights for the ViT encoder: from a local file or by name, in the official or the Hugging Face naming.

Files are read with ``safetensors`` or ``torch.load(weights_only=True)``: no code from them is run.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from .._errors import CellmixerError
from ._folder import state_dict_mismatch
from ._vit import SIZE_LETTERS, VIT_SIZES, VisionTransformer

DINOV2_BASE_URL = "https://dl.fbaipublicfiles.com/dinov2"
_LETTERS = {"s": "small", "b": "base", "l": "large", "g": "giant"}
# Official torch.hub names (facebookresearch/dinov2 hubconf) -> (size, register tokens).
OFFICIAL_NAMES = {f"dinov2_vit{letter}14{suffix}": (size, registers)
                  for letter, size in _LETTERS.items() for suffix, registers in (("", 0), ("_reg", 4))}
# Hugging Face model repositories -> (size, register tokens).
HF_NAMES = {f"facebook/dinov2-{prefix}{size}": (size, registers)
            for size in VIT_SIZES for prefix, registers in (("", 0), ("with-registers-", 4))}
# Wrappers and prefixes found around backbone weights (training checkpoints, classification models).
_CONTAINERS = ("model", "state_dict", "teacher")
_PREFIXES = ("module.", "backbone.", "dinov2.", "model.")
_IGNORED = ("mask_token",)  # masked-image pre-training only


def dinov2_url(name: str) -> str:
    """Download address of DINOv2 weights by name (official hub names or Hugging Face repositories).

    >>> dinov2_url("dinov2_vits14_reg")
    'https://dl.fbaipublicfiles.com/dinov2/dinov2_vits14/dinov2_vits14_reg4_pretrain.pth'
    >>> dinov2_url("facebook/dinov2-base")
    'https://huggingface.co/facebook/dinov2-base/resolve/main/model.safetensors'
    """
    if name in OFFICIAL_NAMES:
        base = name.removesuffix("_reg")
        full = base + ("_reg4" if name.endswith("_reg") else "")
        return f"{DINOV2_BASE_URL}/{base}/{full}_pretrain.pth"
    if name in HF_NAMES:
        return f"https://huggingface.co/{name}/resolve/main/model.safetensors"
    raise KeyError(name)


def _known_names() -> str:
    return ", ".join([*OFFICIAL_NAMES, *HF_NAMES][:8]) + ", ..."


def _read_file(path: Path, option: str) -> dict:
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt, truncated, pickled code, not a weights file
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise CellmixerError(f"{option} {path}: cannot read the weights ({reason}); the file is corrupt or not a "
                             "DINOv2 checkpoint (.pth, .pt, .bin or .safetensors).") from None


def _download(name: str, option: str) -> dict:
    url = dinov2_url(name)
    try:
        if name in OFFICIAL_NAMES:
            return torch.hub.load_state_dict_from_url(url, map_location="cpu", weights_only=True,
                                                      file_name=url.rsplit("/", 1)[1])
        path = Path(torch.hub.get_dir()) / "checkpoints" / (name.replace("/", "_") + ".safetensors")
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(url, str(path), progress=True)
        return _read_file(path, option)
    except CellmixerError:
        raise
    except Exception as exc:  # offline, proxy, HTTP error, interrupted download
        raise CellmixerError(f"{option} {name}: could not download {url} ({type(exc).__name__}); download it "
                             "where you are online and give the file's path.") from None


def read_weights(source, *, option: str = "--pretrained") -> dict:
    """The tensors of a weights file, or of DINOv2 weights downloaded by name (cached by torch.hub).

    ``source`` is a path (``.pth``/``.pt``/``.bin`` read with ``torch.load(weights_only=True)``,
    ``.safetensors``) or a name: ``dinov2_vits14``, ``dinov2_vitb14_reg``, ... (official) or
    ``facebook/dinov2-small``, ``facebook/dinov2-with-registers-large``, ... (Hugging Face).
    """
    path = Path(source)
    if path.is_file():
        state = _read_file(path, option)
    elif str(source) in OFFICIAL_NAMES or str(source) in HF_NAMES:
        state = _download(str(source), option)
    else:
        raise CellmixerError(f"{option} {source}: no such file, and not a known DINOv2 name ({_known_names()}).")
    while isinstance(state, dict) and len(state) >= 1 and any(isinstance(state.get(k), dict) for k in _CONTAINERS):
        state = next(state[k] for k in _CONTAINERS if isinstance(state.get(k), dict))
    if not isinstance(state, dict) or not state or not all(torch.is_tensor(v) for v in state.values()):
        raise CellmixerError(f"{option} {source}: holds no tensors by name (a state dict); give a DINOv2 checkpoint.")
    return state


def _from_hugging_face(state: dict) -> dict:
    """Hugging Face ``Dinov2Model`` names -> official names (query/key/value fused into qkv)."""
    renames = [
        (r"embeddings\.cls_token", "cls_token"), (r"embeddings\.mask_token", "mask_token"),
        (r"embeddings\.position_embeddings", "pos_embed"), (r"embeddings\.register_tokens", "register_tokens"),
        (r"embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
        (r"encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"blocks.\1.attn.proj."),
        (r"encoder\.layer\.(\d+)\.layer_scale(\d)\.lambda1", r"blocks.\1.ls\2.gamma"),
        (r"encoder\.layer\.(\d+)\.mlp\.weights_in\.", r"blocks.\1.mlp.w12."),
        (r"encoder\.layer\.(\d+)\.mlp\.weights_out\.", r"blocks.\1.mlp.w3."),
        (r"encoder\.layer\.(\d+)\.mlp\.down_proj\.", r"blocks.\1.mlp.w3."),
        (r"encoder\.layer\.(\d+)\.", r"blocks.\1."),
        (r"layernorm\.", "norm."),
    ]
    converted, fused = {}, {}
    for key, value in state.items():
        match = re.fullmatch(r"encoder\.layer\.(\d+)\."
                             r"(?:attention\.attention\.(query|key|value)|mlp\.(gate_proj|up_proj))\.(weight|bias)", key)
        if match:
            block, part, half, kind = match.groups()
            target = f"blocks.{block}.attn.qkv.{kind}" if part else f"blocks.{block}.mlp.w12.{kind}"
            fused.setdefault(target, {})[part or half] = value
            continue
        for pattern, replacement in renames:
            new, count = re.subn("^" + pattern, replacement, key)
            if count:
                converted[new] = value
                break
        else:
            converted[key] = value  # reported as unexpected below
    for target, parts in fused.items():
        order = ("query", "key", "value") if target.split(".")[2] == "attn" else ("gate_proj", "up_proj")
        if set(parts) != set(order):
            raise KeyError(f"{target}: only {sorted(parts)} found")
        converted[target] = torch.cat([parts[p] for p in order], dim=0)
    return converted


def dinov2_state_dict(state: dict) -> dict:
    """Weights in the official facebookresearch/dinov2 naming (the names of :class:`VisionTransformer`),
    from either naming; wrapper prefixes and chunked blocks (``blocks.C.N.``) are undone."""
    state = dict(state)
    for prefix in _PREFIXES:
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    if any(k.startswith(("embeddings.", "encoder.layer.")) for k in state):
        state = _from_hugging_face(state)
    # Training checkpoints with block_chunks > 0 hold blocks.<chunk>.<index>. (the index is global).
    state = {re.sub(r"^blocks\.\d+\.(\d+)\.", r"blocks.\1.", k): v for k, v in state.items()}
    return {k: v for k, v in state.items() if k not in _IGNORED}


def _describe(dim: int, blocks: int, registers: int, ffn: str) -> str:
    name = next((f"ViT-{SIZE_LETTERS[size]}/14" for size, s in VIT_SIZES.items()
                 if s["embed_dim"] == dim and s["num_blocks"] == blocks and s["ffn"] == ffn),
                f"a ViT of width {dim} with {blocks} blocks ({ffn} feed-forward)")
    return name + (f" with {registers} registers" if registers else "")


def load_dinov2_weights(encoder: VisionTransformer, source, *, option: str = "--pretrained") -> dict:
    """Load DINOv2 weights (file or name, either naming) into ``encoder``.

    Position embeddings stored for another grid are interpolated bicubically to the encoder's.

    Returns
    -------
    dict
        ``source``, ``naming`` (``'official'`` or ``'hugging face'``) and ``encoder`` (description).
    """
    raw = read_weights(source, option=option)
    naming = "hugging face" if any(".layer." in k or k.startswith("embeddings.") for k in raw) else "official"
    try:
        state = dinov2_state_dict(raw)
    except KeyError as exc:
        raise CellmixerError(f"{option} {source}: incomplete DINOv2 weights ({exc.args[0]}).") from None
    if "cls_token" not in state or "pos_embed" not in state:
        raise CellmixerError(f"{option} {source}: not DINOv2 weights (no class token or position embeddings); give "
                             "a DINOv2 checkpoint in the official or the Hugging Face naming.")
    dim = state["cls_token"].shape[-1]
    blocks = len({int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k))})
    registers = state["register_tokens"].shape[1] if "register_tokens" in state else 0
    ffn = "swiglu" if any(".mlp.w12." in k for k in state) else "mlp"
    mine = (encoder.embed_dim, len(encoder.blocks), encoder.num_registers,
            "swiglu" if hasattr(encoder.blocks[0].mlp, "w12") else "mlp")
    if (dim, blocks, registers, ffn) != mine:
        size = next((s for s, v in VIT_SIZES.items() if v["embed_dim"] == dim), None)
        hint = f" (--vit-size {size} --registers {registers})" if size else ""
        raise CellmixerError(f"{option} {source}: these are {_describe(dim, blocks, registers, ffn)} weights but the "
                             f"model's encoder is {_describe(*mine)}; build the model to match{hint} or give other "
                             "weights.")
    expected = encoder.state_dict()
    pos = state["pos_embed"]
    if pos.ndim == 3 and pos.shape != expected["pos_embed"].shape:
        stored, wanted = round((pos.shape[1] - 1) ** 0.5), encoder.grid_size
        if stored * stored + 1 == pos.shape[1]:
            grid = pos[:, 1:].float().reshape(1, stored, stored, -1).permute(0, 3, 1, 2)
            grid = F.interpolate(grid, size=(wanted, wanted), mode="bicubic", align_corners=False)
            state["pos_embed"] = torch.cat([pos[:, :1].float(), grid.permute(0, 2, 3, 1).reshape(1, wanted**2, -1)],
                                           dim=1)
    detail = state_dict_mismatch(expected, state)
    if detail:
        raise CellmixerError(f"{option} {source}: does not fit the encoder ({detail}); give DINOv2 weights of the "
                             "model's size.")
    encoder.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})
    return {"source": str(source), "naming": naming, "encoder": _describe(*mine)}


def load_pretrained_encoder(network, source, *, option: str = "--pretrained") -> dict:
    """Load DINOv2 weights into the encoder of ``network`` (an architecture with a ViT ``encoder``)."""
    encoder = getattr(network, "encoder", None)
    if not isinstance(encoder, VisionTransformer):
        raise CellmixerError(f"{option} {source}: this architecture has no pretrained encoder; use --model segmenter "
                             "or --model vit-linear.")
    return load_dinov2_weights(encoder, source, option=option)
