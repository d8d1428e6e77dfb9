"""Reading a parsed gin config in tests."""
import gin


def bound(binding: str):
    """The parsed config's value of `binding`, macros resolved."""
    value = gin.query_parameter(binding)
    while isinstance(value, gin.config.ConfigurableReference) and value.selector == "gin.macro":
        value = gin.query_parameter("%" + value.scoped_selector.rsplit("/", 1)[0])
    return value
