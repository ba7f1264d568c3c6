-- 0001: the seed's tables, the publication Debezium reads, and what each table feeds.
--
-- Column names and types are the catalog models' (ys_platform/catalog/models.py) of the topic a
-- table feeds, so a row unwrapped by Debezium (ExtractNewRecordState) is a valid message as it
-- stands: timestamptz -> ISO-8601 with an offset, double precision -> a JSON number, text[] -> a
-- JSON array, jsonb -> a JSON string (UserPortfolio parses it). The CHECK constraints repeat the
-- models' rules so that a row the models would reject never gets in: the database refuses it at
-- write time instead of a consumer dead-lettering it later.

-- defi.protocols (DefiProtocol), keyed by id; a compacted topic, deletes become tombstones.
CREATE TABLE protocols (
    id          text PRIMARY KEY CHECK (id <> ''),
    name        text NOT NULL CHECK (name <> ''),
    description text,
    category    text NOT NULL CHECK (category <> ''),
    -- NOT NULL: the model's chains is a (possibly empty) list, never null.
    chains      text[] NOT NULL DEFAULT '{}' CHECK (array_position(chains, '') IS NULL),
    tvl         double precision NOT NULL CHECK (tvl >= 0),
    apy         double precision CHECK (apy >= 0),
    risk_score  double precision CHECK (risk_score BETWEEN 0 AND 1),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- defi.tokens (DefiToken), keyed by contract address.
CREATE TABLE tokens (
    address        text PRIMARY KEY CHECK (address <> ''),
    symbol         text NOT NULL CHECK (symbol ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$'),
    name           text NOT NULL CHECK (name <> ''),
    chain          text NOT NULL CHECK (chain <> ''),
    decimals       smallint NOT NULL CHECK (decimals BETWEEN 0 AND 255),
    price_usd      double precision NOT NULL CHECK (price_usd >= 0),
    market_cap_usd double precision CHECK (market_cap_usd >= 0),
    description    text,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- defi.transactions (DefiTransaction); the row is identified by tx_hash, the topic keyed by
-- user_id (the connector sets message.key.columns) so one user's actions stay in order.
CREATE TABLE transactions (
    tx_hash  text PRIMARY KEY CHECK (tx_hash <> ''),
    user_id  text NOT NULL CHECK (user_id <> ''),
    protocol text NOT NULL CHECK (protocol <> ''),
    chain    text NOT NULL CHECK (chain <> ''),
    action   text NOT NULL
        CHECK (action IN ('deposit', 'withdraw', 'borrow', 'repay', 'swap', 'liquidation')),
    asset    text NOT NULL CHECK (asset ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$'),
    amount   double precision NOT NULL CHECK (amount >= 0),
    ts       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX transactions_user_ts ON transactions (user_id, ts);

-- defi.liquidity-pools (LiquidityPool), keyed by pool_id.
CREATE TABLE liquidity_pools (
    pool_id  text PRIMARY KEY CHECK (pool_id <> ''),
    protocol text NOT NULL CHECK (protocol <> ''),
    chain    text NOT NULL CHECK (chain <> ''),
    token0   text NOT NULL CHECK (token0 ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$'),
    token1   text NOT NULL CHECK (token1 ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$'),
    reserve0 double precision NOT NULL CHECK (reserve0 >= 0),
    reserve1 double precision NOT NULL CHECK (reserve1 >= 0),
    -- Basis points: 10,000 bps = 100 %.
    fee_bps  double precision NOT NULL CHECK (fee_bps BETWEEN 0 AND 10000),
    tvl_usd  double precision NOT NULL CHECK (tvl_usd >= 0),
    ts       timestamptz NOT NULL DEFAULT now()
);

-- defi.yields (YieldStrategy), keyed by strategy_id.
CREATE TABLE yield_strategies (
    strategy_id text PRIMARY KEY CHECK (strategy_id <> ''),
    protocol    text NOT NULL CHECK (protocol <> ''),
    chain       text NOT NULL CHECK (chain <> ''),
    asset       text NOT NULL CHECK (asset ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$'),
    apy         double precision NOT NULL CHECK (apy >= 0),
    tvl_usd     double precision NOT NULL CHECK (tvl_usd >= 0),
    ts          timestamptz NOT NULL DEFAULT now()
);

-- Table of record, not captured: no catalog model describes a user record (users.events holds
-- activity events, a different thing), and profile data has no consumer on the bus.
CREATE TABLE users (
    user_id      text PRIMARY KEY CHECK (user_id <> ''),
    display_name text,
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- users.portfolios (UserPortfolio), keyed by user_id: the full list of positions as JSONB
-- (each element a catalog Position), one row per user holding its latest snapshot.
CREATE TABLE portfolios (
    user_id   text PRIMARY KEY CHECK (user_id <> ''),
    positions jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(positions) = 'array'),
    ts        timestamptz NOT NULL DEFAULT now()
);

-- Table of record, not captured: shaped like RiskAssessment, but risk.assessments is the risk
-- processor's output topic; capturing this table too would put a second writer on it and the
-- ClickHouse sink would store every assessment twice.
CREATE TABLE risk_assessments (
    user_id        text NOT NULL CHECK (user_id <> ''),
    health_factor  double precision CHECK (health_factor >= 0),
    ltv            double precision NOT NULL CHECK (ltv >= 0),
    collateral_usd double precision NOT NULL CHECK (collateral_usd >= 0),
    debt_usd       double precision NOT NULL CHECK (debt_usd >= 0),
    risk_score     double precision NOT NULL CHECK (risk_score BETWEEN 0 AND 1),
    hhi            double precision NOT NULL CHECK (hhi BETWEEN 0 AND 1),
    var_95_1d_usd  double precision NOT NULL CHECK (var_95_1d_usd >= 0),
    assessed_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, assessed_at),
    CHECK ((health_factor IS NULL) = (debt_usd = 0))
);

-- REPLICA IDENTITY FULL on every captured table: pgoutput then sends complete old rows and,
-- above all, every column of the new row on an update. With the default identity an update
-- that leaves a TOASTed value (a long description, a large positions document) untouched
-- carries Debezium's "__debezium_unavailable_value" placeholder instead; in `description` that
-- would pass the model's validation and overwrite the real text downstream. The cost is the old
-- row in the WAL of each update/delete; these tables change at human, not market, rates.
ALTER TABLE protocols REPLICA IDENTITY FULL;
ALTER TABLE tokens REPLICA IDENTITY FULL;
ALTER TABLE transactions REPLICA IDENTITY FULL;
ALTER TABLE liquidity_pools REPLICA IDENTITY FULL;
ALTER TABLE yield_strategies REPLICA IDENTITY FULL;
ALTER TABLE portfolios REPLICA IDENTITY FULL;

-- What Debezium (pgoutput) streams: exactly the captured tables. The connector is configured
-- with publication.autocreate.mode=disabled, so it needs no CREATE privilege and cannot widen it.
CREATE PUBLICATION ys_cdc FOR TABLE
    protocols, tokens, transactions, liquidity_pools, yield_strategies, portfolios;
