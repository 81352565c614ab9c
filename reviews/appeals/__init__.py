"""Seller appeals: intake from the marketplace, the appeals queue under the portal's lease, and
outcomes recorded through the one decision path (reviews.decisions.services). Not built yet."""
