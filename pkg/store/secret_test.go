package store_test

import "github.com/sluicehq/sluice/pkg/secret"

func secretOf(s string) secret.Secret { return secret.Secret(s) }
