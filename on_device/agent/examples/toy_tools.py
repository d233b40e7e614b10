"""Toy tools matching what the tiny test models were trained to call (sdk_tools/tinymodels/corpus.py).

Specs come from toy_tools.json next to this file; the functions are bound by name. Use with
`gemma4-mobile agent BUNDLE --tools on_device/agent/examples/toy_tools.py`.
"""

from __future__ import annotations

# Same figures as the training corpus, so that the tiny model's answers can be checked.
WEATHER = {
    "Paris": (18, "sunny"), "Berlin": (12, "cloudy"), "Rome": (24, "sunny"), "Madrid": (27, "clear"),
    "Tokyo": (21, "rainy"), "Ottawa": (5, "snowy"), "Cairo": (33, "hot"), "Oslo": (2, "snowy"),
    "Lima": (19, "foggy"), "Athens": (26, "sunny"),
}
BATTERY_LEVEL = 88
ALARMS: list[tuple[int, int]] = []


def get_weather(city: str) -> dict:
    temp, cond = WEATHER.get(city, (15, "cloudy"))
    return {"temp_c": temp, "condition": cond}


def add(a: int, b: int) -> dict:
    return {"sum": a + b}


def set_alarm(hour: int, minute: int) -> dict:
    if not (0 <= hour < 24 and 0 <= minute < 60):
        return {"status": "error", "reason": "no such time"}
    ALARMS.append((hour, minute))
    return {"status": "ok"}


def get_battery() -> dict:
    return {"level": BATTERY_LEVEL}
