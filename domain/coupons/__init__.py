"""Coupon pools, their codes, issuing them to members and redeeming them at the till (docs/promotions.md)."""
