# One exception base for everything meterseal.protocol rejects. It subclasses ValueError so
# callers that only know "bad input" can still catch it.


class ProtocolError(ValueError):
    pass


class CBORError(ProtocolError):
    pass


class COSEError(ProtocolError):
    pass


class RecordError(ProtocolError):
    # `field` names the offending record field (a dotted path), or None for whole-record errors.
    def __init__(self, field, message):
        super().__init__((field + ": " + message) if field else message)
        self.field = field


class MTSICSError(ProtocolError):
    pass


class TLSError(ProtocolError):
    pass


class UplinkError(ProtocolError):
    pass
