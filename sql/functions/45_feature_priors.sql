-- Empirical-Bayes prior strength for the user features (sql/features/user_features.sql).
--
-- Users i have n_i >= 1 trials of a rate (or draws of a category) whose population mean is m (for
-- categories: the population shares pi). Under a Beta(kappa m, kappa (1 - m)) prior (a
-- Dirichlet(kappa pi) one), the users' observed rates p_i scatter around m with
--   E[(p_i - m)^2] = m (1 - m) (1 + (n_i - 1) rho) / n_i,   rho = 1 / (kappa + 1)
-- (for categories, m (1 - m) becomes 1 - sum pi^2 and the square sums over categories). The
-- method of moments sets the average of both sides equal: with D = mean squared deviation /
-- (m (1 - m)) (the dispersion) and A = mean of 1 / n_i over the users,
--   rho = (D - A) / (1 - A),   kappa = 1 / rho - 1,
-- clamped to [p_min, p_max] pseudo-observations. No dispersion beyond binomial noise (rho <= 0)
-- gives p_max: everyone is the population. An undefined estimate (no users, every user with one
-- trial, or a population rate of 0 or 1) gives p_min: the data speak for themselves.

create or replace function recsys.eb_prior_strength(
    p_dispersion double precision, p_mean_inverse_n double precision,
    p_min double precision, p_max double precision
)
returns double precision
language sql
immutable
parallel safe
as $$
    select
        case
            when p_dispersion is null or p_mean_inverse_n is null or p_mean_inverse_n >= 1 then p_min
            else 1 / greatest(
                least((p_dispersion - p_mean_inverse_n) / (1 - p_mean_inverse_n), 1 / (p_min + 1)),
                1 / (p_max + 1)
            ) - 1
        end
$$;

comment on function recsys.eb_prior_strength(double precision, double precision, double precision, double precision) is
'Method-of-moments strength kappa (pseudo-observations) of a Beta or Dirichlet population prior: '
'rho = (dispersion - mean(1/n)) / (1 - mean(1/n)), kappa = 1/rho - 1, clamped to [p_min, p_max]; p_min when undefined.';
