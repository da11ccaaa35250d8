"""Noise schedule, (x0, eps) conversion, the DDIM jump, segments and samplers: pure tensor math."""

from dancelcm.diffusion.schedule import CLEAN, NoiseSchedule
from dancelcm.diffusion.segments import Segments

__all__ = ["CLEAN", "NoiseSchedule", "Segments"]
