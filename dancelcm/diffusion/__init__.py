"""Noise schedule, (x0, eps) conversion, the DDIM jump, segments and samplers: pure tensor math."""

from dancelcm.diffusion.schedule import CLEAN, FlowMatchSchedule, NoiseSchedule, Schedule, schedule_from_config
from dancelcm.diffusion.segments import Segments

__all__ = ["CLEAN", "FlowMatchSchedule", "NoiseSchedule", "Schedule", "Segments", "schedule_from_config"]
