import dataclasses
import datetime as dt

import numpy as np
import pandas as pd
import pytest
from lifetimes import BetaGeoFitter, GammaGammaFitter

from segmentation import clv, rfm
from segmentation.clv import CLVConfig, FittedCLV
from segmentation.rfm import SegmentationError

AS_OF = dt.date(2011, 9, 9)


@pytest.fixture(scope="module")
def features(synthetic):
    return rfm.rfm_summary(synthetic.place("clean"), as_of=AS_OF).cache()


@pytest.fixture(scope="module")
def fitted(features, synthetic):
    return clv.fit_clv(features, synthetic.place("clean"), as_of=AS_OF, config=CLVConfig(seasonal=False))


def test_condensed_fit_equals_lifetimes_on_every_customer(features, fitted):
    rows = features.toPandas()
    reference = BetaGeoFitter().fit(rows.frequency, rows.recency, rows["T"])
    np.testing.assert_allclose(pd.Series(fitted.params)[reference.params_.index], reference.params_, rtol=1e-3)
    repeaters = rows[rows.frequency > 0]
    spend = GammaGammaFitter().fit(repeaters.frequency, repeaters.monetary_value)
    np.testing.assert_allclose(pd.Series(fitted.spend_params)[spend.params_.index], spend.params_, rtol=2e-2)
    assert fitted.patterns < len(rows)


def test_spark_scores_equal_lifetimes_scores_for_the_same_parameters(features, fitted):
    scored = clv.score_clv(features, fitted, horizon_days=12 * 30, discount_rate=0.01, purchase_horizon_days=92)
    ours = scored.toPandas().set_index("customer_id").sort_index()
    purchases, spend = clv.restore_models(fitted)
    f, r, t, m = ours.frequency, ours.recency, ours["T"], ours.monetary_value

    np.testing.assert_allclose(ours.p_alive, purchases.conditional_probability_alive(f, r, t), rtol=1e-9)
    np.testing.assert_allclose(ours.expected_purchases, purchases.conditional_expected_number_of_purchases_up_to_time(92, f, r, t), rtol=1e-9)
    np.testing.assert_allclose(ours.expected_avg_spend, spend.conditional_expected_average_profit(f, m), rtol=1e-9)
    reference = spend.customer_lifetime_value(purchases, f, r, t, m, time=12, discount_rate=0.01, freq="D")
    np.testing.assert_allclose(ours.clv, reference, rtol=1e-9)
    assert ours.clv.gt(0).all() and ours.p_alive.between(0, 1).all()


def test_fitted_parameters_round_trip_through_json(fitted):
    assert FittedCLV.from_json(fitted.to_json()) == fitted


def test_seasonal_index_lifts_the_busy_months(synthetic):
    index, note = clv.seasonal_index(synthetic.place("clean"), as_of=AS_OF)
    # History starts 2009-12: April to June 2011 are too recent for a centred window, 2010's too early.
    assert "months [4, 5, 6] have no centred 12-month window" in note
    assert [index[m] for m in (4, 5, 6)] == [1.0, 1.0, 1.0]
    busy = np.mean([index[11], index[12]])
    quiet = np.mean([index[m] for m in (1, 2, 3, 7, 8, 9, 10)])
    assert busy > 1.4 * quiet  # the generator plants a 1.8x bump in November and December


def test_seasonal_weights_apply_by_calendar_month(fitted):
    seasonal = dataclasses.replace(fitted, seasonal_index={m: (2.0 if m == 10 else 1.0) for m in range(1, 13)})
    pieces = clv.horizon_pieces(seasonal, 92, 0.0)
    # observation ends 2011-09-08: 22 September days, 31 October days at weight 2, 30 November, 9 December
    october = [piece for piece in pieces if piece[2] == 2.0]
    assert sum(end - start for start, end, _, _ in october) == 31
    assert min(start for start, _, _, _ in october) == 22  # after the 22 days of September 9..30
    assert sum(end - start for start, end, _, _ in pieces) == 92


def test_short_history_turns_seasons_off_with_a_note(spark, synthetic):
    index, note = clv.seasonal_index(synthetic.place("clean"), as_of=dt.date(2010, 6, 1))
    assert index == {} and "seasonal index off" in note


def test_too_few_repeat_buyers_is_a_clear_error(spark):
    rows = [(str(i), 0.0, 0.0, 10.0, 0.0) for i in range(30)]
    features = spark.createDataFrame(rows, "customer_id string, frequency double, recency double, T double, monetary_value double")
    with pytest.raises(SegmentationError, match="at least 5 repeat buyers .* found 0"):
        clv.fit_clv(features, None, as_of=AS_OF, config=CLVConfig(seasonal=False))


def test_a_single_customer_is_a_clear_error(spark):
    features = spark.createDataFrame([("a", 3.0, 20.0, 40.0, 12.0)], "customer_id string, frequency double, recency double, T double, monetary_value double")
    with pytest.raises(SegmentationError, match="at least 20 customers .* found 1"):
        clv.fit_clv(features, None, as_of=AS_OF)


def test_unknown_model_is_a_clear_error(features, synthetic):
    with pytest.raises(SegmentationError, match="unknown CLV model 'bgnb'"):
        clv.fit_clv(features, synthetic.place("clean"), as_of=AS_OF, config=CLVConfig(model="bgnb", seasonal=False))


def test_a_failed_fit_is_retried_with_a_penalizer_and_noted(features, synthetic, monkeypatch):
    from lifetimes.utils import ConvergenceError

    original = BetaGeoFitter.fit

    def fail_without_penalizer(self, *args, **kwargs):
        if self.penalizer_coef == 0:
            raise ConvergenceError("did not converge")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(BetaGeoFitter, "fit", fail_without_penalizer)
    fitted = clv.fit_clv(features, synthetic.place("clean"), as_of=AS_OF, config=CLVConfig(seasonal=False))
    assert fitted.penalizer == 0.001
    assert any("did not converge with penalizer 0.0" in note for note in fitted.notes)
    assert any("converged with penalizer 0.001" in note for note in fitted.notes)


def test_fits_do_not_depend_on_partitioning(spark, features, synthetic):
    from pyspark.sql import functions as F

    # An eighth of the customers (about 175), chosen by hash: a Pareto/NBD fit takes about 2 s per hundred patterns.
    eighth = features.where(F.pmod(F.xxhash64("customer_id"), F.lit(8)) == 0)
    shuffled = eighth.repartition(5, "recency")
    for model in ("bgnbd", "paretonbd"):
        config = CLVConfig(model=model, seasonal=False)
        first = clv.fit_clv(eighth, None, as_of=AS_OF, config=config)
        second = clv.fit_clv(shuffled, None, as_of=AS_OF, config=config)
        assert first.params == second.params and first.spend_params == second.spend_params


@pytest.mark.filterwarnings("ignore:invalid value encountered in log:RuntimeWarning")  # the fit below that goes to zero
def test_a_model_that_cannot_forecast_the_data_is_replaced_by_one_that_can(spark):
    """Nobody seems to drop out of a short history: BG/NBD's dropout parameters go to zero at every penalizer, where
    lifetimes forecasts NaN. The next model that forecasts every customer in finite numbers is fitted instead."""
    rows = []
    for customer in range(60):
        age, frequency = 60 + customer, customer % 6
        rows.append((str(customer), float(frequency), float(age - customer % 3 if frequency else 0), float(age),
                     10.0 + customer if frequency else 0.0))
    features = spark.createDataFrame(rows, "customer_id string, frequency double, recency double, T double, monetary_value double")
    lonely = BetaGeoFitter(penalizer_coef=0.01).fit(*(pd.DataFrame(rows).iloc[:, 1:4].T.to_numpy()))
    assert np.isnan(lonely.conditional_expected_number_of_purchases_up_to_time(360, 0.0, 0.0, 60.0))  # what is avoided

    fitted = clv.fit_clv(features, None, as_of=AS_OF, config=CLVConfig(seasonal=False))
    assert fitted.model == "mbgnbd"
    assert "bgnbd failed with every penalizer: fitting mbgnbd instead" in fitted.notes
    assert any(note.startswith("bgnbd gave no finite forecast for") for note in fitted.notes)
    scored = clv.score_clv(features, fitted, horizon_days=360).toPandas()
    assert np.isfinite(scored[["p_alive", "expected_purchases", "clv"]].to_numpy()).all()


def test_a_fit_prints_nothing_of_its_own_and_swallows_nothing_another_thread_prints(capsys):
    """Validation windows are segmented on driver threads side by side: a failing lifetimes fit (lifetimes prints the
    optimiser's state) must neither print nor hide what the job prints meanwhile, nor leave stdout redirected."""
    import threading

    import numpy as np
    from lifetimes import BetaGeoFitter

    rng = np.random.default_rng(0)
    T = rng.uniform(30, 300, 500)
    recency = T * rng.uniform(0, 1, 500)
    frequency = np.where(recency > 0, rng.poisson(3, 500), 0)
    inside, printed, errors = threading.Event(), threading.Event(), []

    class WaitingFitter(BetaGeoFitter):
        def fit(self, *args, **kwargs):
            inside.set()
            printed.wait(10)
            return super().fit(*args, **kwargs)

    def fit_that_fails():
        try:  # one iteration is too few to converge
            clv._fit_with_retries(lambda penalizer: WaitingFitter(penalizer_coef=penalizer), (frequency, recency, T), (0.0, 0.01),
                                  "BG/NBD", [], maxiter=1)
        except SegmentationError as error:
            errors.append(error)

    fitting = threading.Thread(target=fit_that_fails)
    fitting.start()
    inside.wait(10)
    print("progress while fitting")
    printed.set()
    fitting.join()
    print("progress after fitting")
    assert len(errors) == 1 and "did not converge" in str(errors[0])
    assert capsys.readouterr().out == "progress while fitting\nprogress after fitting\n"
