"""The one error type of the store layer; messages name the store (redacted) and the key."""


class StoreError(ValueError):
    """A store is missing, malformed, unreadable or holds bad values.

    The message always names the store by its redacted URL (never credentials) and,
    where it applies, the variable and chunk key or signal index.
    """
