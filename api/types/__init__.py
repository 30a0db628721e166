"""GraphQL object, input and enum types of the contract (api-contract.graphql)."""
