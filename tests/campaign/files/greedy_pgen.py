"""A pgen that ignores START and NROWS: it always gives the same five rows (a campaign must refuse it)."""
from maestrowf.datastructures.core import ParameterGenerator


def get_custom_generator(env, **kwargs):
    generator = ParameterGenerator()
    for name in ("PARAM1", "PARAM2", "PARAM3"):
        generator.add_parameter(name, [str(value) for value in range(5)], f"{name}.%%")
    return generator
