"""TEMPORARY (methods branch): replaced by the data_specs branch's modality table."""
CHANNELS = {"rgb": 3, "flow": 2, "audio": 1}


def channels(name: str) -> int:
    return CHANNELS[name]
