"""A CoNLL-2003-format stand-in for MoNA's 1D source surrogate (Ma et al., ICML 2024, arXiv 2406.18864), hard
enough that a linear probe on it measures what an encoder knows (groundwork for the CPU-scale benchmark).

Paper map: §2.2 / Fig. 3 probe the source knowledge of an encoder on the source surrogate; §4 / App. A.6 use
CoNLL-2003 as the 1D source data of the stage-1 outer loss (Alg. 1). readers/sources.py (`_conll`, `conll_mentions`)
reads conll2003/eng.train (split "train") and conll2003/eng.testb (split "test") and makes one sample per
entity mention: input_ids = tokenizer(mention, sentence) as a pair, label = PER / ORG / LOC / MISC.
CoNLL-2003 itself cannot be downloaded here; `write_surrogate` writes files of the same format:
    -DOCSTART- -X- -X- O            (a document break, then a blank line)
    word POS chunk NER              (one token a line; NER in IOB1 as the original files, IOB2 on request;
                                     POS / chunk tags are rough, and the reader ignores them)
    <blank line between sentences>

Why it is built this way. A template surrogate with one word list per entity type is linearly separable under
any encoder (the mention's word alone gives the type): every encoder probed at 0 % error, no distortion could
show. Here the type has to be inferred:
  - AMBIGUOUS mentions (`AMBIGUOUS`): one surface form, several types, decided by the sentence ("Jordan"
    PER / LOC, "Washington" PER / LOC / ORG (the team), "Ford" PER / ORG, "Christian" PER / MISC, "Derby"
    LOC / ORG / MISC; "Houston beat Dallas 24-17" (teams: ORG) vs "Houston beat Dallas 6-3 6-4" (players:
    PER)). An entity slot takes one with probability `p_ambiguous`;
  - NOTHING lexical carries over from train to test but the ambiguous names and common words: the ~200
    sentence frames and the unambiguous names are split 60/40 between eng.train and eng.testb (drawn with
    the seed), so a probe fit on eng.train must generalise to unseen contexts and unseen names ("Toyota" ->
    "Hyundai"): that takes what a pretrained encoder knows of English and the world; a random body has only
    the bag of (unseen) words;
  - real English vocabulary: Reuters-style sport, politics, business and culture sentences, optional
    adjuncts ("[on {day}]", openings such as "Last week ,", closings such as ", officials said", each kept
    with probability `p_optional` or its half) so that no frame is one fixed string;
  - labels are noise-free: a slot's kind fixes the type (TEAM -> ORG; NAT / EVENT / AWARD / WAR -> MISC);
  - one sentence, one entity mostly: a frame's other slots become common noun phrases ("the visitors",
    "the capital"), except with probability `p_extra` and in appositions ({PER!}: "{NAT} striker {PER!}"),
    so some sentences hold several mentions of different types that share the whole sentence of the pair;
  - types balanced: the next frame is drawn among those holding the rarest type so far.
What set the defaults (MiniLM-L6, mean over the pair's real tokens, probe.linear_probe_error; error on
eng.testb): the pooled pair is dominated by the sentence. On a 2,000 / 1,000-mention draw (p_ambiguous 0.5,
one entity a sentence) the pretrained body's features of the mention alone gave 28 %, of the sentence alone
51 %, of the pair 44 %; every further entity sharing a sentence costs the pair probe most (p_extra 0.25:
45-52 % over four generator variants, 37-45 % at 0; the random body 53-66 % throughout); fewer ambiguous
names (0.25 vs 0.5; 5,000 / 2,000 mentions, two seeds) brought the pretrained error from 44-45 % to 38-40 % and
left the random body at 59-60 %.
Defaults: p_ambiguous 0.25, p_extra 0.1, p_optional 0.5, 5,000 / 2,000 mentions (load_source_surrogate's
max_samples is 5,000). Measured with them (seed 0; `--measure`, 2 CPU cores; chance 75 %):
    encoder                    seq len   probe test error %   pairs truncated %
    pretrained MiniLM-L6          32            42.0                 0.1
    pretrained MiniLM-L6          64            42.2                 0.0
    random init, same body        32            61.2                 0.1
    random init, same body        64            61.2                 0.0
    majority type of the mention string in eng.train (unseen -> the majority type)   65.3
    bag-of-words logistic regression on the pair (mention words marked)               50.0

Measure: `python bench/conll_surrogate.py OUT_DIR --measure MINILM_FOLDER` writes the files, reads them back
with sources.conll_mentions, draws up to 5,000 mentions a split as sources._conll does, encodes each
(mention, sentence) pair as sources._conll tokenises it (pair, truncation, padding to --seq-len; input_ids +
attention mask, token types left at 0 as our 1D path does), mean-pools the last hidden state over the REAL
tokens (attention mask), fits probe.linear_probe_error (the Fig. 3 protocol: StandardScaler +
LogisticRegression) on eng.train features and reports the eng.testb error, for the pretrained checkpoint and
for a randomly initialised body of the same architecture (torch seed = --seed; the scratch reference), beside
the two encoder-free references above.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TYPES = ("PER", "ORG", "LOC", "MISC")                   # = sources.CONLL_TYPES
KIND_TYPE = {"PER": "PER", "ORG": "ORG", "TEAM": "ORG", "LOC": "LOC", "NAT": "MISC", "EVENT": "MISC",
             "AWARD": "MISC", "WAR": "MISC"}

# ---------------------------------------------------------------------------------------------------------
# names. Unambiguous names are split between train and test by the seed; ambiguous ones appear in both.
# ---------------------------------------------------------------------------------------------------------
NAMES = {
    "PER": """Peter Blackburn|Boris Yeltsin|Helmut Kohl|Bill Clinton|Nelson Mandela|Yasser Arafat|Jacques Chirac|
        John Major|Pete Sampras|Steffi Graf|Andre Agassi|Martina Hingis|Michael Schumacher|Damon Hill|Alan Shearer|
        Boris Becker|Nick Faldo|Carl Lewis|Wasim Akram|Sachin Tendulkar|Brian Lara|Romano Prodi|Kofi Annan|
        Alberto Fujimori|Warren Christopher|Madeleine Albright|Alan Greenspan|Bob Dole|Newt Gingrich|Li Peng|
        Alexander Lebed|Slobodan Milosevic|Franjo Tudjman|Lamberto Dini|Wim Kok|Goran Persson|Benjamin Netanyahu|
        Maria Lopez|David Chen|Sarah Thompson|Mark Wilson|Anna Kowalski|Thomas Muller|Ahmed Hassan|Kenji Tanaka|
        Olga Petrova|Luis Fernandez|Jean Dupont|Michael Jordan|George Washington|Harrison Ford|Yeltsin|Clinton|
        Mandela|Sampras|Schumacher|Kohl|Chirac|Netanyahu|Tendulkar|Hingis|Agassi|Greenspan|Dole|Fujimori""",
    "ORG": """Reuters|Siemens|Microsoft|IBM|General Motors|Toyota|Volkswagen|Deutsche Bank|Barclays|Nestle|Unilever|
        British Airways|Lufthansa|Nintendo|Intel|Motorola|Exxon|PepsiCo|Coca-Cola|Citibank|Goldman Sachs|
        Credit Suisse|Airbus|Renault|Fiat|Olivetti|Hyundai|Samsung|NATO|United Nations|European Union|OPEC|
        UEFA|FIFA|IMF|World Bank|Bundesbank|Interpol|Greenpeace|Red Cross|Labour|Ford Motor|Sony|Philips|
        Nissan|Daimler-Benz|Alcatel|Ericsson|Gazprom|Aeroflot|Oxford University|Harvard University""",
    "TEAM": """Bayern Munich|Juventus|Ajax|Arsenal|Rangers|Feyenoord|PSV Eindhoven|Benfica|Real Madrid|AC Milan|
        Inter Milan|Leeds United|Manchester United|Paris Saint-Germain|Chicago Bulls|Boston Celtics|
        Dallas Cowboys|Houston Rockets|New York Yankees|Boston Red Sox|Borussia Dortmund|Werder Bremen|
        Sampdoria|Lazio|Atletico Madrid|Newcastle|Tottenham|Aston Villa|Blackburn Rovers|Anderlecht|
        Galatasaray|Sparta Prague|Spartak Moscow|Los Angeles Lakers|Green Bay Packers|Toronto Blue Jays""",
    "LOC": """Germany|France|Britain|Russia|China|Japan|Brazil|Argentina|Nigeria|Kenya|Egypt|Iraq|Iran|Bosnia|
        Sarajevo|Moscow|Beijing|Tokyo|Bonn|Brussels|London|Frankfurt|Geneva|Nairobi|Lagos|Cairo|Baghdad|Tehran|
        Jerusalem|Gaza|Chechnya|Grozny|Kabul|Islamabad|New Delhi|Colombo|Jakarta|Manila|Hanoi|Seoul|Lima|
        Bogota|Mexico City|Havana|Ottawa|Canberra|Rhine|Danube|Siberia|Kashmir|Texas|California|Ohio|
        Bavaria|Scotland|Wales|Hong Kong|South Africa|Poland|Hungary|Turkey|Greece|Spain|Italy""",
    "NAT": """German|British|Russian|Chinese|Japanese|Brazilian|Nigerian|Kenyan|Egyptian|Iraqi|Iranian|
        Bosnian|Serb|Croat|Muslim|Jewish|Arab|Palestinian|Israeli|European|African|Asian|Spanish|Italian|Dutch|
        Swiss|Swedish|Danish|Polish|Hungarian|Turkish|Greek|Mexican|Canadian|Australian|Scottish|Korean""",
    "EVENT": """World Cup|Olympics|Olympic Games|Tour de France|US Open|Davis Cup|Ryder Cup|Super Bowl|Euro 96|
        Australian Open|French Open|Cup Winners' Cup|Champions League|UEFA Cup|Boston Marathon|
        Monaco Grand Prix|British Grand Prix|Commonwealth Games|Asian Games|Giro d'Italia|America's Cup""",
    "AWARD": """Nobel Prize|Pulitzer Prize|Booker Prize|Golden Globe|Nobel Peace Prize|Palme d'Or|Golden Bear|
        Ballon d'Or|Prix Goncourt|Golden Lion|Turner Prize|Man Booker Prize""",
    "WAR": """Gulf War|Cold War|Second World War|Vietnam War|Korean War|Falklands War|First World War|
        Six-Day War|Iran-Iraq War|Bosnian War""",
}
# surface form -> the slot kinds it can fill (hence its possible types)
AMBIGUOUS = {
    "Jordan": "PER LOC", "Washington": "PER LOC TEAM", "Paris": "PER LOC", "Sydney": "PER LOC",
    "Austin": "PER LOC", "Florence": "PER LOC", "Victoria": "PER LOC", "Georgia": "PER LOC",
    "Lincoln": "PER LOC", "Jackson": "PER LOC", "Madison": "PER LOC", "Charlotte": "PER LOC TEAM",
    "Chelsea": "PER LOC TEAM", "Houston": "PER LOC TEAM", "Orlando": "PER LOC TEAM", "Dallas": "PER LOC TEAM",
    "Chicago": "LOC TEAM", "Boston": "LOC TEAM", "Denver": "LOC TEAM", "Phoenix": "LOC TEAM",
    "Detroit": "LOC TEAM", "Toronto": "LOC TEAM", "Seattle": "LOC TEAM", "Milan": "LOC TEAM",
    "Madrid": "LOC TEAM", "Barcelona": "LOC TEAM", "Liverpool": "LOC TEAM", "Leeds": "LOC TEAM",
    "Porto": "LOC TEAM", "Bordeaux": "LOC TEAM", "Monaco": "LOC TEAM", "Derby": "LOC TEAM EVENT",
    "Wimbledon": "LOC TEAM EVENT", "Ford": "PER ORG", "Dell": "PER ORG", "Disney": "PER ORG",
    "Ferrari": "PER ORG TEAM", "Porsche": "PER ORG", "Kellogg": "PER ORG", "Morgan": "PER ORG",
    "Hilton": "PER ORG", "Honda": "PER ORG", "Chanel": "PER ORG", "Benetton": "PER ORG TEAM",
    "McLaren": "PER ORG TEAM", "Williams": "PER ORG TEAM", "Mercedes": "PER ORG", "Amazon": "ORG LOC",
    "Columbia": "ORG LOC", "Orange": "ORG LOC", "Christian": "PER NAT", "Roman": "PER NAT",
    "Norman": "PER NAT", "English": "PER NAT", "French": "PER NAT", "Welsh": "PER NAT", "Celtic": "NAT TEAM",
    "Israel": "PER LOC", "Chad": "PER LOC", "India": "PER LOC", "Oscar": "PER AWARD", "Tony": "PER AWARD",
    "Emmy": "PER AWARD", "Grammy": "AWARD", "Nobel": "PER AWARD", "Masters": "PER EVENT",
}
AMBIGUOUS = {k: tuple(v.split()) for k, v in AMBIGUOUS.items()}

# ---------------------------------------------------------------------------------------------------------
# sentence frames: {KIND} = an entity slot, {day} {num} ... = fillers. Split between train and test by the seed.
# ---------------------------------------------------------------------------------------------------------
FRAMES = """
{TEAM} beat {TEAM} {score} on {day} .
{PER} beat {PER} {tscore} in the second round .
{PER} scored twice as {TEAM} won {score} at home .
{TEAM} coach {PER!} said his players were tired after the trip to {LOC} .
{PER} , who joined {TEAM} from {TEAM} last season , is injured .
{NAT} striker {PER!} missed a penalty against {TEAM} .
{TEAM} lead the standings by {num} points after the win over {TEAM} .
{PER} won the {EVENT} for the {ord} time .
The {EVENT} will be held in {LOC} in {year} .
{LOC} will host the {EVENT} in {year} .
{PER} finished {ord} behind {PER} in the {EVENT} .
{NAT} champion {PER!} withdrew from the {EVENT} with a back injury .
{TEAM} signed {NAT} midfielder {PER!} on a three-year contract .
{PER} shot a {num}-under-par {golf} in the final round in {LOC} .
{TEAM} and {TEAM} drew {draw} in {LOC} on {day} .
Fans of {TEAM} celebrated in the streets of {LOC} until dawn .
{TEAM} sacked manager {PER!} after a run of {num} defeats .
{PER} set a world record at the {EVENT} in {LOC} .
{TEAM} travel to {LOC} to face {TEAM} on {day} .
{PER} lost to {PER} {tscore} in the quarter-finals .
{PER} will captain the {NAT} side at the {EVENT} .
{TEAM} have won {num} of their last {num} matches .
{PER} beat {PER} in straight sets .
{PER} arrived in {LOC} on {day} for talks with {NAT} leaders .
{NAT} troops entered {LOC} early on {day} , witnesses said .
{PER} told reporters in {LOC} that the talks had failed .
The {NAT} foreign minister met {PER} in {LOC} on {day} .
{ORG} said it would send observers to {LOC} .
{LOC} and {LOC} signed a trade agreement on {day} .
{PER!} , the {NAT} prime minister , resigned on {day} .
Police in {LOC} arrested {num} people after clashes with supporters of {PER} .
{PER} accused {ORG} of ignoring the crisis in {LOC} .
{LOC} expelled two {NAT} diplomats on {day} .
The {NAT} government rejected the {ORG} proposal .
{PER} flew to {LOC} after meeting {PER} .
Rebels attacked a village near {LOC} , the {NAT} army said .
{PER} won {pct} percent of the vote in {LOC} .
{ORG} called for new elections in {LOC} .
Thousands marched through {LOC} to protest against {PER} .
{LOC} recalled its ambassador from {LOC} on {day} .
{PER} will visit {LOC} and {LOC} next month .
{NAT} and {NAT} officials met in {LOC} on {day} .
{PER} said {LOC} would not accept the {ORG} plan .
{LOC} has been under sanctions since the {WAR} .
{ORG} shares rose {pct} percent in {LOC} on {day} .
{ORG} said its net profit fell to {num} million dollars .
{PER!} , chief executive of {ORG} , said sales were strong .
{ORG} agreed to buy {ORG} for {num} billion dollars .
{ORG} will open a plant in {LOC} next year .
Analysts expect {ORG} to cut jobs in {LOC} .
The {NAT} carmaker {ORG!} recalled {num} thousand vehicles .
{PER} joined the board of {ORG} in {month} .
{ORG} is based in {LOC} and employs {num} thousand people .
Shares in {ORG} fell after {PER} resigned .
The {NAT} central bank left interest rates unchanged on {day} .
{PER} bought a {pct} percent stake in {ORG} .
{ORG} launched a hostile bid for {ORG} on {day} .
Traders in {LOC} said the {NAT} currency was weak .
{ORG} hired {PER} as finance director .
{PER} sold his shares in {ORG} last year .
{ORG} posted a loss as demand in {LOC} slowed .
{PER} won the {AWARD} for his novel about {LOC} .
{PER} was born in {LOC} in {year} .
{PER!} , a {NAT} writer , died in {LOC} on {day} .
A {NAT} film about {PER} opened in {LOC} this week .
{PER} spoke to students at {ORG} on {day} .
Floods killed {num} people in {LOC} , {ORG} said .
{PER} was nominated for the {AWARD} .
{PER} became the first {NAT} woman to win the {AWARD} .
{ORG} has organised the {EVENT} since {year} .
The {NAT} community in {LOC} celebrated on {day} .
{PER} lives in {LOC} with his family .
The museum in {LOC} bought a painting by {PER} .
{PER} sang the {NAT} anthem before the {EVENT} final .
{ORG} television showed the {EVENT} live .
Veterans of the {WAR} gathered in {LOC} on {day} .
{PER} served as a pilot in the {WAR} .
{NAT} forces fought in the {WAR} .
{PER} wrote a history of the {WAR} .
{PER} married {PER} in {LOC} in {month} .
{PER} met {NAT} fans after the concert in {LOC} .
{PER} welcomed the decision , his spokesman said .
{ORG} welcomed the decision , its spokesman said .
{LOC} welcomed the decision , the {NAT} foreign ministry said .
A spokesman for {PER} denied the report .
A spokesman for {ORG} denied the report .
The {NAT} ambassador to {LOC} denied the report .
{PER} has played for {TEAM} and {TEAM} .
{TEAM} fans threw bottles at {NAT} supporters in {LOC} .
{PER} thanked the people of {LOC} for their support .
Investors in {LOC} sold {ORG} shares on {day} .
{ORG} and {ORG} will merge their {NAT} operations .
{PER} moved from {LOC} to {LOC} as a child .
The {EVENT} was moved from {LOC} to {LOC} .
{PER!} , the {NAT} ambassador , left {LOC} on {day} .
{PER} said he would not resign .
{PER} told reporters on {day} that she was tired .
{PER} was born in a small village in {year} .
{PER} married an actress last year .
{PER} was sentenced to {num} years in prison for fraud .
Police arrested {PER} at his home on {day} .
The court fined {PER} for tax evasion .
{PER} scored his first goal of the season .
{PER} resigned as finance minister on {day} .
{PER} underwent knee surgery and will miss the rest of the season .
Voters elected {PER} as mayor in {month} .
{PER} announced her retirement from tennis .
{PER} celebrated his 50th birthday with friends .
{PER} wrote a letter to the prime minister .
{PER} kept her seat in parliament .
{PER} shook hands with the president after the ceremony .
{PER} was injured in a car accident on {day} .
{PER} denied that he had taken bribes .
Doctors said {PER} was in a stable condition .
{PER} , {num} , died peacefully in his sleep .
The lawyer for {PER} said the charges were false .
{PER} has three children and two grandchildren .
{PER} , the veteran goalkeeper , will retire at the end of the season .
Fans asked {PER} for her autograph .
{PER} thanked his wife and his mother .
{PER} was questioned by detectives for {num} hours .
{ORG} said its net profit rose {pct} percent .
Shares in {ORG} fell sharply on {day} .
{ORG} plans to cut {num} thousand jobs .
{ORG} reported a quarterly loss .
{ORG} agreed to pay a fine of {num} million dollars .
{ORG} opened a new factory in {month} .
{ORG} is the largest employer in the region .
{ORG} sold its stake in a rival .
Analysts downgraded {ORG} on {day} .
{ORG} said in a statement that it would appeal .
The board of {ORG} met on {day} .
{ORG} was founded in {year} .
{ORG} issued a profit warning .
{ORG} raised its dividend by {pct} percent .
Unions at {ORG} called a strike .
{ORG} won a contract to build a bridge .
{ORG} filed for bankruptcy protection .
{ORG} listed its shares on the stock exchange .
{ORG} spokeswoman declined to comment .
Regulators approved the takeover of {ORG} .
Workers at {ORG} accepted a pay offer .
{ORG} pledged emergency aid to the flood victims .
{TEAM} were relegated to the second division .
{TEAM} won the league for the {ord} time .
{TEAM} sacked their manager after the defeat .
{TEAM} play at home on {day} .
{TEAM} signed a striker for {num} million pounds .
{TEAM} are top of the table .
{TEAM} lost {score} in extra time .
The stadium of {TEAM} was sold out .
{TEAM} were knocked out of the cup .
{TEAM} kept a clean sheet for the {ord} game running .
Supporters of {TEAM} rioted after the match .
{TEAM} conceded a late goal and lost {score} .
{LOC} lies on the banks of a wide river .
Heavy snow fell in {LOC} on {day} .
An earthquake struck {LOC} on {day} .
The population of {LOC} rose to {num} million .
Tourists flocked to {LOC} this summer .
{LOC} shares a border with three countries .
Troops were sent to {LOC} on {day} .
He flew to {LOC} on {day} .
House prices in {LOC} rose by {pct} percent .
A bomb exploded in central {LOC} on {day} .
She grew up in {LOC} .
The road to {LOC} was closed by floods .
{LOC} has a warm climate and sandy beaches .
{LOC} declared independence in {year} .
Farmers in {LOC} expect a good harvest .
Refugees fled across the border into {LOC} .
The temperature in {LOC} reached {num} degrees .
The government of {LOC} imposed a curfew .
The {NAT} government said it would cut taxes .
{NAT} officials denied the report on {day} .
A {NAT} court sentenced the men to {num} years .
{NAT} troops withdrew from the border .
The {NAT} team won the relay .
{NAT} newspapers reported the story on {day} .
The {NAT} embassy was closed on {day} .
A {NAT} tourist was killed in the attack .
The {NAT} currency fell to a record low .
{NAT} voters went to the polls on {day} .
The {NAT} national anthem was played .
{NAT} farmers protested against the new law .
He speaks fluent {NAT} .
The {NAT} economy grew by {pct} percent .
The {EVENT} begins on {day} .
Tickets for the {EVENT} sold out in a day .
He competed in the {EVENT} in {year} .
The {EVENT} was postponed because of rain .
She won a gold medal at the {EVENT} .
Television rights for the {EVENT} were sold for {num} million dollars .
Thousands watched the opening ceremony of the {EVENT} .
He missed the {EVENT} through injury .
Security was tight at the {EVENT} .
She was nominated for the {AWARD} in {year} .
The jury of the {AWARD} met on {day} .
He shared the {AWARD} with two colleagues .
The {AWARD} carries a cash prize .
Her novel was shortlisted for the {AWARD} .
Veterans of the {WAR} held a parade .
He fought in the {WAR} as a young man .
Since the end of the {WAR} , the border has been quiet .
A film about the {WAR} won praise from critics .
Memories of the {WAR} are still painful .
"""
# optional adjuncts ("[on {day}]": kept with probability p_optional in each sentence): more varied sentences
_OPTIONAL = r" ((?:on|in) \{(?:day|month|year)\}|last year|next month|this week|last season|early)(?= )"
FRAMES = [re.sub(_OPTIONAL, r" [\1]", f.strip()) for f in FRAMES.strip().splitlines() if f.strip()]
# a slot that is not the sentence's entity is filled with a common noun phrase (no entity), except {KIND!} slots
# (appositions such as "{NAT} striker {PER!}", where a noun phrase would not read as English)
GENERIC = {"PER": ["the coach", "the president", "a spokesman", "the player", "the minister", "the chairman",
                   "his rival", "the leader"],
           "ORG": ["the company", "the group", "the bank", "the firm", "the agency", "the ministry"],
           "TEAM": ["the visitors", "the home side", "their rivals", "the champions", "the leaders"],
           "LOC": ["the capital", "the region", "the city", "the north", "the border town", "the province"],
           "NAT": ["local", "national", "regional", "provincial"],
           "EVENT": ["the tournament", "the championship", "the final", "the games"],
           "AWARD": ["the prize", "the award", "the top prize"],
           "WAR": ["the war", "the conflict", "the civil war"]}
_DET = ("the", "a", "an", "their", "his")
# type-neutral openings and closings, each added with probability p_optional / 2 (the same for every type)
PREFIX = ["On {day} ,", "Earlier this year ,", "In {month} ,", "Meanwhile ,", "Last week ,", "According to reports ,",
          "In {year} ,", "As expected ,", "Once again ,"]
SUFFIX = [", officials said", ", a spokesman said", ", reports said", ", sources said", ", witnesses said",
          ", it was announced", ", according to reports", ", local media reported"]
FILL = {
    "day": "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split(),
    "num": "two three four five six seven eight nine ten 12 15 20 25 40".split(),
    "score": "1-0 2-1 3-1 2-0 3-2 4-1 24-17 21-14 98-90 105-99 87-81 5-3 7-4".split(),
    "tscore": ["6-3 6-4", "7-5 6-2", "6-4 3-6 6-1", "6-2 6-2", "7-6 6-4", "6-1 6-3 6-4", "4-6 6-3 7-5"],
    "draw": "0-0 1-1 2-2 3-3".split(), "golf": "68 67 66 69 65".split(),
    "pct": "2.5 4 11 17 31 45 52 3.8 0.7 60".split(), "year": [str(y) for y in range(1992, 2005)],
    "month": "January February March April May June July August September October November December".split(),
    "ord": "second third fourth fifth".split(),
}
# rough Penn Treebank POS tags and chunk tags of the filler / frame words (the reader ignores both columns)
_POS = {".": ".", ",": ",", "the": "DT", "a": "DT", "an": "DT", "its": "PRP$", "his": "PRP$", "their": "PRP$",
        "in": "IN", "on": "IN", "of": "IN", "from": "IN", "for": "IN", "at": "IN", "after": "IN", "with": "IN",
        "against": "IN", "behind": "IN", "by": "IN", "near": "IN", "about": "IN", "since": "IN", "until": "IN",
        "before": "IN", "as": "IN", "through": "IN", "over": "IN", "to": "TO", "and": "CC", "that": "IN",
        "it": "PRP", "who": "WP", "is": "VBZ", "was": "VBD", "were": "VBD", "has": "VBZ", "have": "VBP",
        "had": "VBD", "will": "MD", "would": "MD", "been": "VBN", "said": "VBD", "percent": "NN",
        **dict.fromkeys("won sold beat lost met told flew left wrote withdrew shot drew bought threw sang fought "
                        "became spoke hired".split(), "VBD"), "born": "VBN", "thousand": "CD", "million": "CD",
        "billion": "CD", **dict.fromkeys("two three four five six seven eight nine ten".split(), "CD")}


def _pos(w):
    if w in _POS:
        return _POS[w]
    if w[:1].isdigit():
        return "CD"
    if w.endswith("ed"):
        return "VBD"
    return "NNS" if w.endswith("s") else "NN"


def _chunk(pos):
    return {"DT": "I-NP", "NN": "I-NP", "NNS": "I-NP", "NNP": "I-NP", "CD": "I-NP", "PRP": "I-NP", "PRP$": "I-NP",
            "JJ": "I-NP", "WP": "I-NP", "IN": "I-PP", "TO": "I-PP", "VBD": "I-VP", "VBZ": "I-VP", "VBP": "I-VP",
            "VBN": "I-VP", "MD": "I-VP"}.get(pos, "O")


def _names():
    return {k: sorted({n.strip() for n in v.split("|") if n.strip()}) for k, v in NAMES.items()}


def _slot(tok):
    """'{PER}' -> ('PER', False), '{PER!}' -> ('PER', True), anything else -> (None, False)."""
    if tok.startswith("{") and tok.endswith("}") and tok[1:-1].rstrip("!") in KIND_TYPE:
        return tok[1:-1].rstrip("!"), tok.endswith("!}")
    return None, False


def _kinds(frame):
    return [k for k, _ in map(_slot, frame.split()) if k]


def split_inventory(seed=0, test_fraction=0.4):
    """{"train"/"test": (frames, {kind: unambiguous names})}: disjoint frames and names, drawn with the seed."""
    rng = np.random.default_rng([seed, 1])
    out = {"train": ([], {}), "test": ([], {})}
    for i in rng.permutation(len(FRAMES)):
        out["test" if (len(out["test"][0]) < test_fraction * len(FRAMES)) else "train"][0].append(FRAMES[i])
    for kind, names in _names().items():
        p = rng.permutation(len(names))
        k = max(1, int(round(test_fraction * len(names))))
        out["test"][1][kind] = [names[i] for i in sorted(p[:k])]
        out["train"][1][kind] = [names[i] for i in sorted(p[k:])]
    for split, (frames, _) in out.items():
        missing = {t for t in TYPES} - {KIND_TYPE[k] for f in frames for k in _kinds(f)}
        if missing:
            raise ValueError(f"conll surrogate: seed {seed} left no {sorted(missing)} frame in {split}")
    return out


def generate(split, n_mentions, *, seed=0, p_ambiguous=0.25, p_extra=0.1, p_optional=0.5, test_fraction=0.4):
    """Sentences of one split: a list of [(word, type or None, mention id)], at least n_mentions mentions.
    Each sentence: the rarest type so far picks a frame holding a slot of that type; that slot is an entity,
    so are the frame's {KIND!} slots, every other slot with probability p_extra (else a common noun phrase).
    An entity slot takes an ambiguous name with probability p_ambiguous. Deterministic in (seed, split)."""
    frames, pools = split_inventory(seed, test_fraction)[split]
    amb = {k: sorted(n for n, ks in AMBIGUOUS.items() if k in ks) for k in KIND_TYPE}
    rng = np.random.default_rng([seed, 2, ("train", "test").index(split)])

    def pick(seq):
        return seq[int(rng.integers(len(seq)))]

    by_type = {t: [f for f in frames if t in {KIND_TYPE[k] for k in _kinds(f)}] for t in TYPES}
    count = dict.fromkeys(TYPES, 0)
    sents, mid = [], 0
    while sum(count.values()) < n_mentions:
        low = min(count.values())
        t = TYPES[int(rng.choice([i for i, ty in enumerate(TYPES) if count[ty] == low]))]
        frame = re.sub(r" \[([^\]]*)\]", lambda m: " " + m.group(1) if rng.random() < p_optional else "",
                       pick(by_type[t]))
        if rng.random() < p_optional / 2 and not frame.endswith(("said .", "reported .")):
            frame = frame[:-2] + " " + pick(SUFFIX) + " ."
        if rng.random() < p_optional / 2:
            frame = pick(PREFIX) + " " + frame[0].lower() + frame[1:] if frame.startswith(("The ", "A ", "An ")) \
                else pick(PREFIX) + " " + frame
        toks = frame.split()
        target = pick([i for i, tok in enumerate(toks) if _slot(tok)[0] and KIND_TYPE[_slot(tok)[0]] == t])
        words, used = [], set()
        for i, tok in enumerate(toks):
            kind, forced = _slot(tok)
            if kind is None:                             # a word, possibly with fillers inside ("{num}-under-par")
                words += [(w, None, None) for w in
                          re.sub(r"\{(\w+)\}", lambda m: str(pick(FILL[m.group(1)])), tok).split()]
            elif i == target or forced or rng.random() < p_extra:
                for _ in range(20):                      # two mentions of one sentence never share a name
                    name = pick(amb[kind] if (amb[kind] and rng.random() < p_ambiguous) else pools[kind])
                    if name not in used:
                        break
                used.add(name)
                words += [(w, KIND_TYPE[kind], mid) for w in name.split()]
                count[KIND_TYPE[kind]] += 1
                mid += 1
            else:                                        # a common noun phrase instead of an entity
                phrase = pick(GENERIC[kind]).split()
                if words and words[-1][0].lower() in _DET and phrase[0] in _DET:
                    phrase = phrase[1:]                  # "the {EVENT}" -> "the tournament", not "the the ..."
                words += [(w, None, None) for w in phrase]
        if words[0][1] is None and words[0][0][:1].islower():
            words[0] = (words[0][0][:1].upper() + words[0][0][1:],) + words[0][1:]
        for i in range(len(words) - 1):                  # a -> an before a vowel
            if words[i][0].lower() == "a" and words[i + 1][0][:1].lower() in "aeiou":
                words[i] = ("An" if words[i][0] == "A" else "an",) + words[i][1:]
        sents.append(words)
    return sents


def to_conll(sents, *, scheme="iob1", doc_every=12):
    """CoNLL-2003 text: -DOCSTART- every doc_every sentences, 'word POS chunk NER' lines, blank lines between
    sentences. iob1 (the original files): I-X inside a mention, B-X only on the first word of a mention that
    directly follows another mention of the same type; iob2 (the Hub export): B-X on every first word."""
    if scheme not in ("iob1", "iob2"):
        raise ValueError(f"to_conll: scheme must be 'iob1' or 'iob2', got {scheme!r}")
    lines = []
    for s, words in enumerate(sents):
        if s % doc_every == 0:
            lines += ["-DOCSTART- -X- -X- O", ""]
        prev_t, prev_m = None, None
        for w, t, m in words:
            if t is None:
                pos = _pos(w.lower() if w[:1].isupper() and w.lower() in _POS else w)
                tag = "O"
            else:
                pos = "JJ" if t == "MISC" and w.endswith(("an", "ish", "ese", "ch", "ic", "i")) else "NNP"
                first = m != prev_m
                b = first and (scheme == "iob2" or prev_t == t)
                tag = ("B-" if b else "I-") + t
            lines.append(f"{w} {pos} {_chunk(pos)} {tag}")
            prev_t, prev_m = t, m
        lines.append("")
    return "\n".join(lines) + "\n"


def write_surrogate(out_dir, n_train=5000, n_test=2000, seed=0, *, p_ambiguous=0.25, p_extra=0.1, p_optional=0.5,
                    scheme="iob1", test_fraction=0.4):
    """Write out_dir/conll2003/eng.train and eng.testb (the names sources.CONLL_FILES looks for first);
    at least n_train / n_test mentions (the last sentence may add up to three more). Returns the two paths."""
    d = os.path.join(os.fspath(out_dir), "conll2003")
    os.makedirs(d, exist_ok=True)
    paths = []
    for split, n, fname in (("train", n_train, "eng.train"), ("test", n_test, "eng.testb")):
        text = to_conll(generate(split, n, seed=seed, p_ambiguous=p_ambiguous, p_extra=p_extra,
                                 p_optional=p_optional, test_fraction=test_fraction), scheme=scheme)
        p = os.path.join(d, fname)
        with open(p + ".tmp", "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(p + ".tmp", p)
        paths.append(p)
    return tuple(paths)


# ---------------------------------------------------------------------------------------------------------
# measurement: linear probes on encoder features (needs torch + transformers; not used by the tests)
# ---------------------------------------------------------------------------------------------------------
def encode(model, tokenizer, mentions, seq_len=32, batch_size=128):
    """Mean of the last hidden state over the real tokens of tokenizer(mention, sentence) -> (n, d) float32,
    and the fraction of pairs the tokenizer truncated."""
    import torch

    feats, cut = [], 0
    model.eval()
    with torch.no_grad():
        for i in range(0, len(mentions), batch_size):
            chunk = mentions[i:i + batch_size]
            a, b = [" ".join(m) for _, m, _ in chunk], [" ".join(s) for s, _, _ in chunk]
            full = tokenizer(a, b)["input_ids"]
            cut += sum(len(r) > seq_len for r in full)
            enc = tokenizer(a, b, truncation=True, max_length=seq_len, padding="max_length", return_tensors="pt")
            mask = enc["attention_mask"]
            h = model(input_ids=enc["input_ids"], attention_mask=mask).last_hidden_state
            m = mask.unsqueeze(-1).to(h.dtype)
            feats.append(((h * m).sum(1) / m.sum(1)).float().numpy())
    return np.concatenate(feats), cut / max(1, len(mentions))


def _baselines(tr, te):
    """Encoder-free references: the mention string's majority type in train; bag-of-words logistic regression."""
    from collections import Counter

    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    ytr = np.array([t for _, _, t in tr])
    yte = np.array([t for _, _, t in te])
    by = {}
    for _, m, t in tr:
        by.setdefault(" ".join(m), Counter())[t] += 1
    major = Counter(ytr.tolist()).most_common(1)[0][0]
    pred = [by[" ".join(m)].most_common(1)[0][0] if " ".join(m) in by else major for _, m, _ in te]
    maj_err = 100.0 * np.mean(np.asarray(pred) != yte)
    # the pair as readers/sources.py writes it: mention words tagged so the classifier can tell them from context words
    def docs(m, s):
        return " ".join("M_" + w for w in m) + " " + " ".join(s)

    vec = CountVectorizer(token_pattern=r"\S+", lowercase=True)
    Xtr = vec.fit_transform([docs(m, s) for s, m, _ in tr])
    Xte = vec.transform([docs(m, s) for s, m, _ in te])
    lr = LogisticRegression(max_iter=2000).fit(Xtr, ytr)
    return maj_err, 100.0 * np.mean(lr.predict(Xte) != yte)


def measure(data_dir, model_dir, *, seq_lens=(32, 64), seed=0, max_samples=5000, batch_size=128):
    """Rows of the probe table: (encoder, seq_len, test error %, truncated %, seconds) + the references."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    sys.path.insert(0, ROOT)
    from readers import sources
    from probe import linear_probe_error

    d = os.path.join(os.fspath(data_dir), "conll2003")
    tr, te = (sources.conll_mentions(os.path.join(d, f)) for f in ("eng.train", "eng.testb"))
    rng = np.random.default_rng(seed)      # as sources._conll: max_samples mentions drawn with the seed
    tr, te = ([ms[i] for i in np.sort(rng.choice(len(ms), min(max_samples, len(ms)), replace=False))]
              for ms in (tr, te))
    ytr, yte = (np.array([t for _, _, t in ms]) for ms in (tr, te))
    tok = AutoTokenizer.from_pretrained(model_dir)
    pre = AutoModel.from_pretrained(model_dir)
    torch.manual_seed(seed)
    rnd = AutoModel.from_config(AutoConfig.from_pretrained(model_dir))
    rows = []
    for name, model in (("pretrained", pre), ("random init", rnd)):
        for L in seq_lens:
            t0 = time.time()
            (ftr, cut_tr), (fte, cut_te) = (encode(model, tok, ms, L, batch_size) for ms in (tr, te))
            err = linear_probe_error(ftr, ytr, fte, yte)
            rows.append((name, L, err, 100 * max(cut_tr, cut_te), time.time() - t0))
            print(f"  [{name}, seq len {L}: {err:.1f} % in {time.time() - t0:.0f} s]", file=sys.stderr, flush=True)
    maj, bow = _baselines(tr, te)
    return rows, {"n_train": len(tr), "n_test": len(te), "majority_of_mention": maj, "bag_of_words": bow,
                  "train_counts": np.bincount(ytr, minlength=4).tolist(),
                  "test_counts": np.bincount(yte, minlength=4).tolist()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir", help="writes OUT_DIR/conll2003/eng.train and eng.testb")
    ap.add_argument("--n-train", type=int, default=5000)
    ap.add_argument("--n-test", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--p-ambiguous", type=float, default=0.25)
    ap.add_argument("--p-extra", type=float, default=0.1)
    ap.add_argument("--p-optional", type=float, default=0.5)
    ap.add_argument("--scheme", choices=("iob1", "iob2"), default="iob1")
    ap.add_argument("--measure", metavar="MODEL_FOLDER", help="a Hugging Face encoder folder (e.g. all-MiniLM-L6-v2)")
    ap.add_argument("--seq-len", type=int, nargs="+", default=[32, 64])
    a = ap.parse_args(argv)
    paths = write_surrogate(a.out_dir, a.n_train, a.n_test, a.seed, p_ambiguous=a.p_ambiguous, p_extra=a.p_extra,
                            p_optional=a.p_optional, scheme=a.scheme)
    print("wrote", *paths)
    if not a.measure:
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rows, info = measure(a.out_dir, a.measure, seq_lens=tuple(a.seq_len), seed=a.seed)
    print(f"mentions: train {info['n_train']} {dict(zip(TYPES, info['train_counts']))}, "
          f"test {info['n_test']} {dict(zip(TYPES, info['test_counts']))}; chance 75 %")
    print(f"{'encoder':<28} {'seq len':>7} {'probe test error %':>19} {'pairs truncated %':>18} {'s':>6}")
    for name, L, err, cut, sec in rows:
        print(f"{name:<28} {L:>7} {err:>19.1f} {cut:>18.1f} {sec:>6.0f}")
    print(f"{'majority type of mention':<28} {'-':>7} {info['majority_of_mention']:>19.1f}")
    print(f"{'bag of words (pair)':<28} {'-':>7} {info['bag_of_words']:>19.1f}")


if __name__ == "__main__":
    main()
