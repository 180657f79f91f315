"""A tiny shop: the example project of pytest-memcheck's demo."""

import os

# The demo plants a regression by setting this: every order then keeps a copy of its receipt.
_REGRESSION = os.environ.get("SHOP_PLANT_REGRESSION") == "1"
_ARCHIVE: list = []


class Order:
    def __init__(self, items):
        self.items = list(items)

    def total(self):
        return sum(price * qty for _, price, qty in self.items)

    def receipt(self):
        lines = [f"{name:20} {qty:3} x {price:8.2f}" for name, price, qty in self.items]
        text = "\n".join(lines) + f"\nTOTAL {self.total():.2f}"
        if _REGRESSION:
            _ARCHIVE.append(text * 50)  # the leak: every receipt kept, fifty times over
        return text


def catalogue(n):
    return {f"item-{i}": round(1 + i * 0.37, 2) for i in range(n)}
