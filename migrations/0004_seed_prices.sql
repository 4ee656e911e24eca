-- List prices (USD per 1M tokens, input / output) of common models as published by their
-- providers when this file was written. Operators keep them current through
-- PUT /admin/v1/prices/{model}; a price set there is never overwritten by this seed.
INSERT INTO model_prices (model, input_usd_per_1m, output_usd_per_1m) VALUES
    ('gpt-4o',                     2.50,  10.00),
    ('gpt-4o-mini',                0.15,   0.60),
    ('gpt-4.1',                    2.00,   8.00),
    ('gpt-4.1-mini',               0.40,   1.60),
    ('gpt-4.1-nano',               0.10,   0.40),
    ('o3',                         2.00,   8.00),
    ('o4-mini',                    1.10,   4.40),
    ('text-embedding-3-small',     0.02,   0.00),
    ('text-embedding-3-large',     0.13,   0.00),
    ('claude-opus-4-1',           15.00,  75.00),
    ('claude-sonnet-4-5',          3.00,  15.00),
    ('claude-haiku-4-5',           1.00,   5.00),
    ('claude-3-5-haiku-latest',    0.80,   4.00),
    ('gemini-2.5-pro',             1.25,  10.00),
    ('gemini-2.5-flash',           0.30,   2.50),
    ('gemini-2.5-flash-lite',      0.10,   0.40),
    ('deepseek-chat',              0.27,   1.10),
    ('deepseek-reasoner',          0.55,   2.19),
    ('grok-4',                     3.00,  15.00),
    ('mistral-large-latest',       2.00,   6.00),
    ('fake-model',                 1.00,   2.00)
ON CONFLICT (model) DO NOTHING;
