"""Who may do what on the cluster: TLS material, SCRAM users, principals and ACLs."""
