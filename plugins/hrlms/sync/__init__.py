"""Plan (desired vs applied), apply (SCIM 2.0), and the state they keep in the warehouse."""
