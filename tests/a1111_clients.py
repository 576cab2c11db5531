"""What AUTOMATIC1111 clients send, for the tests that speak the dialect (tests/unit/api,
tests/e2e)."""

from __future__ import annotations

from typing import Any

# webuiapi's `WebUIApi.txt2img()` body with its defaults (mix1009/sdwebuiapi), but for the
# size and steps, which are the tiny model's.
WEBUIAPI_TXT2IMG: dict[str, Any] = {
    "enable_hr": False,
    "hr_scale": 2,
    "hr_upscaler": "Latent",
    "hr_second_pass_steps": 0,
    "hr_resize_x": 0,
    "hr_resize_y": 0,
    "denoising_strength": 0.0,
    "firstphase_width": 0,
    "firstphase_height": 0,
    "prompt": "",
    "styles": [],
    "seed": -1,
    "subseed": -1,
    "subseed_strength": 0.0,
    "seed_resize_from_h": -1,
    "seed_resize_from_w": -1,
    "batch_size": 1,
    "n_iter": 1,
    "steps": 2,
    "cfg_scale": 7.0,
    "width": 64,
    "height": 64,
    "restore_faces": False,
    "tiling": False,
    "negative_prompt": "",
    "eta": 0,
    "s_churn": 0,
    "s_tmax": 0,
    "s_tmin": 0,
    "s_noise": 1,
    "override_settings": {},
    "override_settings_restore_afterwards": True,
    "sampler_name": "Euler a",
    "sampler_index": "Euler a",
    "script_name": None,
    "script_args": [],
}
