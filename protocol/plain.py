# Plain value objects for decoded protocol messages: equality and repr come from the attributes,
# so parsed values compare and print plainly on both interpreters (no dataclasses on MicroPython).


class PlainValue:
    def __eq__(self, other):
        return type(other) is type(self) and other.__dict__ == self.__dict__

    def __ne__(self, other):
        return not self.__eq__(other)

    def __repr__(self):
        fields = ", ".join("%s=%r" % item for item in sorted(self.__dict__.items()))
        return "%s(%s)" % (type(self).__name__, fields)
