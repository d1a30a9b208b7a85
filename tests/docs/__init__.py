"""The documentation: the README's and the docs site's examples run and say what they print."""
