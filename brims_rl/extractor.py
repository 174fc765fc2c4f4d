"""A BRIMs features extractor over frame stacks, for any SB3 algorithm (PPO, A2C, DQN...)."""

from __future__ import annotations

from typing import Any, Optional

import torch
from gymnasium import spaces
from stable_baselines3.common.preprocessing import is_image_space
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, NatureCNN
from torch import nn

from brims_rl.core import BRIMs
from brims_rl.utils import check_core_kwargs


class BrimsExtractor(BaseFeaturesExtractor):
    """Encode each frame of a channel-first frame stack with a CNN, run a BRIMs core over
    the stack as a short sequence (oldest frame first, fresh zero state every call) and
    return the top layer's final state.

    ``(B, stack, H, W)`` uint8 (or normalised float) -> ``(B, hidden_size)``.

    Use it with plain ``PPO``/``A2C``::

        PPO("CnnPolicy", env, policy_kwargs=dict(features_extractor_class=BrimsExtractor,
            features_extractor_kwargs=dict(hidden_size=264)))

    Args:
        observation_space: image Box, channel-first, one channel per stacked frame.
        hidden_size: BRIMs state size (the extractor's ``features_dim``).
        frame_features: width of the per-frame CNN code fed to the core.
        core_kwargs: further :class:`brims_rl.BRIMs` arguments (num_layers, top_k, ...).
    """

    def __init__(
        self,
        observation_space: spaces.Box,
        hidden_size: int = 264,
        frame_features: int = 256,
        core_kwargs: Optional[dict[str, Any]] = None,
    ) -> None:
        if not isinstance(observation_space, spaces.Box) or len(observation_space.shape) != 3:
            raise ValueError(
                f"BrimsExtractor needs channel-first image stacks (stack, H, W); got {observation_space}"
            )
        super().__init__(observation_space, features_dim=hidden_size)
        stack, height, width = observation_space.shape
        self.stack = stack
        frame_space = spaces.Box(
            low=observation_space.low.min(),
            high=observation_space.high.max(),
            shape=(1, height, width),
            dtype=observation_space.dtype,
        )
        # SB3 only checks image-ness of uint8 spaces; a float space is taken as already normalised.
        self.frame_encoder = NatureCNN(
            frame_space, features_dim=frame_features, normalized_image=not is_image_space(frame_space)
        )
        core_kwargs = check_core_kwargs(core_kwargs, ("input_size", "hidden_size"), "BrimsExtractor")
        self.core = BRIMs(frame_features, hidden_size, **core_kwargs)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        batch = observations.shape[0]
        frames = observations.reshape(batch * self.stack, 1, *observations.shape[2:])
        codes = self.frame_encoder(frames).view(batch, self.stack, -1).transpose(0, 1)  # (stack, B, F)
        out, _ = self.core(codes)
        return out[-1]


class MinAtarCNN(BaseFeaturesExtractor):
    """The MinAtar paper's encoder (Young & Tian, 2019) for small grids: one 3x3 convolution
    with 16 channels (stride 1, no padding), ReLU, then a fully connected layer of 128 units, ReLU.

    ``(B, C, H, W)`` (uint8 grids are scaled by SB3 before they arrive) -> ``(B, features_dim)``.
    NatureCNN's 8x8 stride-4 first layer cannot read a 10x10 grid; this one keeps every cell.

    Args:
        observation_space: channel-first image Box, at least 3x3.
        features_dim: width of the fully connected layer.
        channels: output channels of the convolution.
    """

    def __init__(self, observation_space: spaces.Box, features_dim: int = 128, channels: int = 16) -> None:
        if not isinstance(observation_space, spaces.Box) or len(observation_space.shape) != 3 or min(observation_space.shape[1:]) < 3:
            raise ValueError(f"MinAtarCNN needs channel-first grids (C, H, W) of at least 3x3; got {observation_space}")
        super().__init__(observation_space, features_dim=features_dim)
        in_channels, height, width = observation_space.shape
        self.conv = nn.Sequential(nn.Conv2d(in_channels, channels, kernel_size=3, stride=1), nn.ReLU(), nn.Flatten())
        self.linear = nn.Sequential(nn.Linear(channels * (height - 2) * (width - 2), features_dim), nn.ReLU())

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.linear(self.conv(observations.float()))
