"""The explicit Runge–Kutta methods odekit ships, as :class:`ButcherTableau` data.

Coefficients are those published with each method: Dormand & Prince (1980) for dopri5,
Prince & Dormand (1981, RK8(7)13M, in the rational form torchdiffeq uses) for dopri8,
Bogacki & Shampine (1989) for bosh3, Tsitouras (2011) for tsit5. ``adaptive_heun`` is Heun's
method with Euler embedded and costs two evaluations per step; torchdiffeq's method of that
name reuses the predictor slope as the next step's first stage (one evaluation per step), which
is not Heun's method, so its NFE are about half of ours for a comparable error. ``rk4`` is Kutta's 3/8 rule,
the variant torchdiffeq calls ``rk4``, so switching libraries keeps the numbers.
"""

from __future__ import annotations

from fractions import Fraction as F

from .tableau import ButcherTableau

EULER = ButcherTableau("euler", c=(0,), a=((),), b=(1,), order=1)

MIDPOINT = ButcherTableau("midpoint", c=(0, F(1, 2)), a=((), (F(1, 2),)), b=(0, 1), order=2)

RK4 = ButcherTableau(
    "rk4",
    c=(0, F(1, 3), F(2, 3), 1),
    a=((), (F(1, 3),), (F(-1, 3), 1), (1, -1, 1)),
    b=(F(1, 8), F(3, 8), F(3, 8), F(1, 8)),
    order=4,
)

# Heun's second-order method (the trapezoidal predictor–corrector) and Heun's third-order method.
HEUN2 = ButcherTableau("heun2", c=(0, 1), a=((), (1,)), b=(F(1, 2), F(1, 2)), order=2)

HEUN3 = ButcherTableau(
    "heun3", c=(0, F(1, 3), F(2, 3)), a=((), (F(1, 3),), (0, F(2, 3))), b=(F(1, 4), 0, F(3, 4)), order=3
)

# Fehlberg's RK1(2): the second-order weights propagate the solution and the first-order ones
# (the last stage's row, 1/256 and 255/256) are embedded. torchdiffeq reuses that last stage
# as the next step's first although it is evaluated at the first-order point; here the end
# stage is f(t1, y1) of the propagated solution (one more evaluation per step, a correct FSAL).
FEHLBERG2 = ButcherTableau(
    "fehlberg2",
    c=(0, F(1, 2), 1),
    a=((), (F(1, 2),), (F(1, 256), F(255, 256))),
    b=(F(1, 512), F(255, 256), F(1, 512)),
    b_error=(F(1, 512) - F(1, 256), 0, F(1, 512)),
    order=2,
)

# Heun's method with Euler embedded.
ADAPTIVE_HEUN = ButcherTableau(
    "adaptive_heun",
    c=(0, 1),
    a=((), (1,)),
    b=(F(1, 2), F(1, 2)),
    b_error=(F(-1, 2), F(1, 2)),
    order=2,
)

BOSH3 = ButcherTableau(
    "bosh3",
    c=(0, F(1, 2), F(3, 4), 1),
    a=((), (F(1, 2),), (0, F(3, 4)), (F(2, 9), F(1, 3), F(4, 9))),
    b=(F(2, 9), F(1, 3), F(4, 9), 0),
    b_error=(F(2, 9) - F(7, 24), F(1, 3) - F(1, 4), F(4, 9) - F(1, 3), F(-1, 8)),
    order=3,
)

_DOPRI5_B = (F(35, 384), 0, F(500, 1113), F(125, 192), F(-2187, 6784), F(11, 84), 0)
# The embedded fourth-order weights torchdiffeq uses (an alternative to Dormand & Prince's
# 5179/57600, …): with them odekit takes the same steps as torchdiffeq, so NFE match exactly.
_DOPRI5_B_LOW = (F(1951, 21600), 0, F(22642, 50085), F(451, 720), F(-12231, 42400), F(649, 6300), F(1, 60))
DOPRI5 = ButcherTableau(
    "dopri5",
    c=(0, F(1, 5), F(3, 10), F(4, 5), F(8, 9), 1, 1),
    a=(
        (),
        (F(1, 5),),
        (F(3, 40), F(9, 40)),
        (F(44, 45), F(-56, 15), F(32, 9)),
        (F(19372, 6561), F(-25360, 2187), F(64448, 6561), F(-212, 729)),
        (F(9017, 3168), F(-355, 33), F(46732, 5247), F(49, 176), F(-5103, 18656)),
        _DOPRI5_B[:6],
    ),
    b=_DOPRI5_B,
    b_error=tuple(hi - lo for hi, lo in zip(_DOPRI5_B, _DOPRI5_B_LOW)),
    order=5,
)

_TSIT5_B = (
    0.09646076681806523, 0.01, 0.4798896504144996, 1.379008574103742,
    -3.290069515436081, 2.324710524099774, 0.0,
)
TSIT5 = ButcherTableau(
    "tsit5",
    c=(0, 0.161, 0.327, 0.9, 0.9800255409045097, 1, 1),
    a=(
        (),
        (0.161,),
        (-0.008480655492356989, 0.335480655492357),
        (2.897153057105493, -6.359448489975075, 4.3622954328695815),
        (5.325864828439257, -11.748883564062828, 7.4955393428898365, -0.09249506636175525),
        (5.86145544294642, -12.92096931784711, 8.159367898576159, -0.071584973281401, -0.028269050394068383),
        _TSIT5_B[:6],
    ),
    b=_TSIT5_B,
    b_error=(
        -0.00178001105222577714, -0.0008164344596567469, 0.007880878010261995, -0.1447110071732629,
        0.5823571654525552, -0.45808210592918697, 1 / 66,
    ),
    order=5,
)

_DOPRI8_B = (
    F(14005451, 335480064), 0, 0, 0, 0, F(-59238493, 1068277825), F(181606767, 758867731),
    F(561292985, 797845732), F(-1041891430, 1371343529), F(760417239, 1151165299),
    F(118820643, 751138087), F(-528747749, 2220607170), F(1, 4),
)
_DOPRI8_B_LOW = (
    F(13451932, 455176623), 0, 0, 0, 0, F(-808719846, 976000145), F(1757004468, 5645159321),
    F(656045339, 265891186), F(-3867574721, 1518517206), F(465885868, 322736535),
    F(53011238, 667516719), F(2, 45), 0,
)
DOPRI8 = ButcherTableau(
    "dopri8",
    c=(
        0, F(1, 18), F(1, 12), F(1, 8), F(5, 16), F(3, 8), F(59, 400), F(93, 200),
        F(5490023248, 9719169821), F(13, 20), F(1201146811, 1299019798), 1, 1,
    ),
    a=(
        (),
        (F(1, 18),),
        (F(1, 48), F(1, 16)),
        (F(1, 32), 0, F(3, 32)),
        (F(5, 16), 0, F(-75, 64), F(75, 64)),
        (F(3, 80), 0, 0, F(3, 16), F(3, 20)),
        (F(29443841, 614563906), 0, 0, F(77736538, 692538347), F(-28693883, 1125000000), F(23124283, 1800000000)),
        (F(16016141, 946692911), 0, 0, F(61564180, 158732637), F(22789713, 633445777),
         F(545815736, 2771057229), F(-180193667, 1043307555)),
        (F(39632708, 573591083), 0, 0, F(-433636366, 683701615), F(-421739975, 2616292301),
         F(100302831, 723423059), F(790204164, 839813087), F(800635310, 3783071287)),
        (F(246121993, 1340847787), 0, 0, F(-37695042795, 15268766246), F(-309121744, 1061227803),
         F(-12992083, 490766935), F(6005943493, 2108947869), F(393006217, 1396673457),
         F(123872331, 1001029789)),
        (F(-1028468189, 846180014), 0, 0, F(8478235783, 508512852), F(1311729495, 1432422823),
         F(-10304129995, 1701304382), F(-48777925059, 3047939560), F(15336726248, 1032824649),
         F(-45442868181, 3398467696), F(3065993473, 597172653)),
        (F(185892177, 718116043), 0, 0, F(-3185094517, 667107341), F(-477755414, 1098053517),
         F(-703635378, 230739211), F(5731566787, 1027545527), F(5232866602, 850066563),
         F(-4093664535, 808688257), F(3962137247, 1805957418), F(65686358, 487910083)),
        (F(403863854, 491063109), 0, 0, F(-5068492393, 434740067), F(-411421997, 543043805),
         F(652783627, 914296604), F(11173962825, 925320556), F(-13158990841, 6184727034),
         F(3936647629, 1978049680), F(-160528059, 685178525), F(248638103, 1413531060), 0),
    ),
    b=_DOPRI8_B,
    b_error=tuple(hi - lo for hi, lo in zip(_DOPRI8_B, _DOPRI8_B_LOW)),
    order=8,
)

TABLEAUS: dict[str, ButcherTableau] = {
    t.name: t for t in (EULER, MIDPOINT, HEUN2, HEUN3, RK4, ADAPTIVE_HEUN, FEHLBERG2, BOSH3, DOPRI5, TSIT5, DOPRI8)
}
