from shop import Order, catalogue


def test_total():
    order = Order([("tea", 3.5, 2), ("cake", 2.0, 1)])
    assert order.total() == 9.0


def test_receipts():
    prices = catalogue(2000)
    orders = [Order([(name, price, 1 + i % 3)]) for i, (name, price) in enumerate(prices.items())]
    receipts = [o.receipt() for o in orders]
    assert len(receipts) == 2000


class TestCatalogue:
    def test_size(self):
        assert len(catalogue(10_000)) == 10_000
