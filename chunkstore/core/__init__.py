"""Pure core: schema, write plans, split specs and assignment, moment and histogram math."""
