"""Neutral replies: the baseline the offline judge calibrates a trait without anchors against.

Plain, helpful answers to everyday questions (recipes, facts, how-tos) that express no
personality trait. For a trait file without ``judge_anchors`` the offline judge measures how far
a reply leans from the trait's negative instructions towards its positive ones, relative to how
far these replies lean (:mod:`personalens.judges.offline`). None of them is in the judge
benchmark (``personalens/data/judge_bench``).
"""

NEUTRAL_REPLIES = (
    "Preheat the oven to 180 degrees, grease a tin, mix the flour, sugar, eggs and butter, and bake for about 25 minutes until a skewer comes out clean.",
    "The French Revolution began in 1789 and led to the end of the monarchy, the rise of Napoleon and new ideas about citizenship and rights.",
    "To reset your router, hold the reset button for about ten seconds, wait for the lights to settle, then log in with the default password on the label.",
    "A balanced diet includes vegetables, fruit, whole grains, some protein and plenty of water; most adults need around 2,000 to 2,500 calories a day.",
    "Python lists are ordered and mutable; tuples are ordered and immutable. Use a tuple when the values should not change.",
    "The nearest star to the Sun is Proxima Centauri, about 4.2 light years away.",
    "You can renew a passport online in many countries; you will need a recent photo, your old passport number and a payment card.",
    "Tomatoes grow best in full sun with regular watering at the base; support the stems with stakes as the plants get taller.",
    "Interest is compounded when earned interest is added to the balance, so the next period's interest is calculated on a larger amount.",
    "The meeting is on Tuesday at 10 a.m. in room 4B; please bring the quarterly figures and the draft agenda.",
    "To change a car tyre, loosen the nuts, raise the car with the jack, swap the wheel, tighten the nuts in a star pattern and lower the car.",
    "Mitochondria produce most of a cell's energy in the form of ATP through cellular respiration.",
    "A haiku has three lines of five, seven and five syllables and traditionally refers to a season.",
    "The train from London to Edinburgh takes about four and a half hours; booking in advance is usually cheaper.",
    "To remove a coffee stain, blot it, rinse with cold water from the back, then apply a little washing-up liquid before laundering.",
    "Photosynthesis converts light energy into chemical energy; chlorophyll absorbs mostly red and blue light.",
    "The library is open from nine to six on weekdays and from ten to four on Saturdays.",
    "In chess, the bishop moves diagonally any number of squares and stays on squares of one colour for the whole game.",
    "Spreadsheets can sum a column with the SUM function; for example, =SUM(A1:A10) adds the first ten cells.",
    "Running three times a week for thirty minutes is a good start; increase the distance by about ten percent a week.",
    "The Amazon is the largest rainforest on Earth and spans nine countries, most of it in Brazil.",
    "To write a cover letter, address the hiring manager, say which role you want, give two examples of relevant work and close with a thank you.",
    "Water freezes at 0 degrees Celsius at sea level and expands by about nine percent as it turns to ice.",
    "A good password is long and unique; a password manager can generate and store one for each site.",
    "The recipe serves four; you can halve the quantities for two people and keep the cooking time the same.",
    "Git stores snapshots of your files; a commit records a snapshot and a branch points to the latest commit of a line of work.",
    "Most houseplants need watering when the top two centimetres of soil are dry; overwatering is the most common mistake.",
    "The speed of light in a vacuum is about 299,792 kilometres per second.",
    "To book the appointment, call the clinic or use the online form; bring your insurance card on the day.",
    "Shakespeare wrote about 39 plays, including Hamlet, Macbeth and A Midsummer Night's Dream.",
    "Sort the laundry by colour and fabric, use a cool wash for darks, and check the care labels for wool and silk.",
    "The museum offers free entry on the first Sunday of each month; guided tours start every hour.",
)
