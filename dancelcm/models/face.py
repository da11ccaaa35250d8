"""DanceLCM's facial fidelity path, in one place: the face tokenizer (the reference face crop through the same
latent autoencoder -> patch tokens) and the decoupled cross-attention that reads those tokens (diffusers'
IP-Adapter processor, value projections zero-initialised so a face-injected student starts as its teacher).
The crop itself is data (``dancelcm.data.dataset.crop_square``); which parameters are "the face path" for the
optimizer is :func:`face_parameters`.
"""

from __future__ import annotations

from typing import Any

import torch
from einops import rearrange
from torch import nn

from dancelcm.models.conditioning import Embedding, dropped


class FaceEmbedder(nn.Module):
    """DanceLCM's facial fidelity condition: the reference face crop encoded by the *same* latent
    autoencoder (``cond['face_latent']``, (B, C, s, s)) -> patch tokens -> linear projection. The tokens
    enter the UNet through decoupled cross-attention (separate key/value projections whose output
    starts at zero, see ``Animator``), so a student with face injection starts identical to its
    teacher. A missing face (``cond['face_valid']`` False) or a dropped condition uses a learned null set.
    """

    name = "face"
    batch_keys = ("face", "face_valid")

    @staticmethod
    def read(batch: dict, autoencoder) -> dict:
        return {"face_latent": autoencoder.encode_images(batch["face"]), "face_valid": batch["face_valid"]}

    def __init__(self, latent_channels: int, face_latent_size: int, token_dim: int = 128):
        super().__init__()
        n = face_latent_size * face_latent_size
        self.to_tokens = nn.Linear(latent_channels, token_dim)
        self.position = nn.Parameter(torch.randn(1, n, token_dim) * 0.02)
        self.null_tokens = nn.Parameter(torch.randn(1, n, token_dim) * 0.02)
        self.num_tokens, self.concat_channels, self.token_dim = n, 0, token_dim

    def forward(self, cond: dict, num_frames: int) -> Embedding:
        face = cond["face_latent"]
        b = face.shape[0]
        tokens = self.to_tokens(rearrange(face, "b c h w -> b (h w) c"))
        if tokens.shape[1] != self.num_tokens:
            raise ValueError(
                f"face latent has {tokens.shape[1]} positions, the face embedder expects {self.num_tokens}: "
                "data.face_size / autoencoder factor must match model face_latent_size"
            )
        keep = ~dropped(cond, self.name, b, face.device) & cond["face_valid"].to(face.device).bool()
        tokens = tokens + self.position
        return Embedding(
            tokens=torch.where(keep[:, None, None], tokens, self.null_tokens.expand(b, -1, -1).to(tokens.dtype))
        )


def install_decoupled_cross_attention(backbone: nn.Module, cross_attention_dim: int, num_tokens: int) -> int:
    """Give every cross-attention layer of the backbone a second key/value path for the last
    ``num_tokens`` context tokens (diffusers' IP-Adapter processor: decoupled cross-attention).

    The new value projections start at zero, so the network's output is unchanged until they learn.
    Returns the number of decoupled layers.
    """
    import warnings

    from diffusers.models.attention_processor import Attention, IPAdapterAttnProcessor2_0

    # diffusers deprecates passing the image tokens concatenated to the context; it still splits them
    # exactly as documented, and a tuple does not pass through UNet3D's blocks.
    warnings.filterwarnings("ignore", message=".*encoder_hidden_states not a tuple.*")
    warnings.filterwarnings("ignore", message=".*passed a tensor as `encoder_hidden_states`.*")
    processors = {}
    modules = []
    for name, proc in backbone.attn_processors.items():
        module_name = name.rsplit(".processor", 1)[0]
        attn = backbone.get_submodule(module_name)
        if isinstance(attn, Attention) and name.endswith("attn2.processor") and attn.is_cross_attention:
            p = IPAdapterAttnProcessor2_0(
                attn.to_q.out_features, cross_attention_dim, num_tokens=(num_tokens,), scale=1.0
            )
            for lin in p.to_v_ip:
                nn.init.zeros_(lin.weight)
            processors[name] = p
            modules.append(p)
        else:
            processors[name] = proc
    if not modules:
        raise ValueError("face injection: the backbone has no cross-attention layer to decouple")
    backbone.set_attn_processor(processors)
    return len(modules)


def face_processors(backbone: nn.Module) -> list[nn.Module]:
    """The decoupled cross-attention processors :func:`install_decoupled_cross_attention` put in ``backbone``."""
    from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0

    return [p for p in backbone.attn_processors.values() if isinstance(p, IPAdapterAttnProcessor2_0)]


def is_face_parameter(name: str) -> bool:
    """Whether a parameter name belongs to the face path (the face tokenizer, the decoupled key/value projections)."""
    return ".embedders.face." in f".{name}" or "_ip." in name or ".face_path." in f".{name}"


def face_parameters(module: nn.Module) -> list[nn.Parameter]:
    """The trainable parameters the face path adds to a network: the face tokenizer and the decoupled
    cross-attention's key/value projections (empty without face injection)."""
    return [p for n, p in module.named_parameters() if p.requires_grad and is_face_parameter(n)]


def face_config(face: dict[str, Any], factor: int, teacher: str) -> dict[str, Any]:
    """The student's face embedder arguments. ``face_size`` (the crop side in pixels, ``data.face_size``) becomes
    ``face_latent_size`` through the factor of the *teacher bundle's* autoencoder, which encodes the crop: the
    run's ``model`` config may describe another architecture than the bundle it distils."""
    face = dict(face)
    if "face_size" in face:
        size = int(face.pop("face_size"))
        if size % factor:
            raise ValueError(
                f"data.face_size={size} is not divisible by the factor {factor} of the teacher's autoencoder "
                f"({teacher}): set data.face_size to a multiple of {factor}"
            )
        face["face_latent_size"] = size // factor
    return face
