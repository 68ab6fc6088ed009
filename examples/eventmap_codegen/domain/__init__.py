"""The shop's domain: order events and the order aggregate."""
