"""Errors that the CLI and the service turn into a one-line message / a 4xx answer."""


class ShopRouterError(Exception):
    """Bad input or configuration: the message is shown to the user as is."""


class InputError(ShopRouterError):
    """The user's input (text, file, label) is not acceptable."""
