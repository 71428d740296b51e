from maestrowf.datastructures.core import ParameterGenerator


def get_custom_generator(env, **kwargs):
    generator = ParameterGenerator()
    generator.add_parameter("A", [1, 2, 3], ["one", "two"])
    return generator
