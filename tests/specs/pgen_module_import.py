"""Imports the package path and reaches the class through attributes, as some pgens do."""
import maestrowf.datastructures.core


def get_custom_generator(env, **kwargs):
    generator = maestrowf.datastructures.core.ParameterGenerator()
    generator.add_parameter("X", ["a", "b"])
    return generator
