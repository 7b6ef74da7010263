"""Services: the business rules, with typed models in and out and adapters passed in."""
