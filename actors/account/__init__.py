"""The account actor: orders, fills and average-cost positions of one account."""
