"""Shared test settings: the suite runs on 2 CPU cores, so keep torch's threads in line."""

import torch

torch.set_num_threads(min(2, torch.get_num_threads()))
