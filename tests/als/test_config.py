import json

import numpy as np
import pytest

from als import ALSConfig


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("factors", 0, "factors: must be >= 1, got 0"),
        ("factors", 2.5, "factors: must be an integer, got 2.5"),
        ("factors", True, "factors: must be an integer, got True"),
        ("reg_factors", 0, "reg_factors: must be > 0 and finite, got 0"),
        ("reg_bias", -1.0, "reg_bias: must be > 0 and finite, got -1.0"),
        ("reg_genre", float("nan"), "reg_genre: must be > 0 and finite, got nan"),
        ("init_scale", float("inf"), "init_scale: must be > 0 and finite, got inf"),
        ("epochs", 0, "epochs: must be >= 1, got 0"),
        ("seed", -3, "seed: must be >= 0, got -3"),
        ("use_genres", 1, "use_genres: must be a bool, got 1"),
    ],
)
def test_config_rejects_invalid_field(field, value, message):
    with pytest.raises(ValueError) as error:
        ALSConfig(**{field: value})
    assert str(error.value) == message


def test_config_to_dict_is_json_ready():
    config = ALSConfig(factors=np.int64(8), reg_factors=np.float32(2.5))
    data = config.to_dict()
    assert data["factors"] == 8
    assert type(data["factors"]) is int
    assert type(data["reg_factors"]) is float
    assert json.loads(json.dumps(data)) == data
    assert ALSConfig(**data) == config
