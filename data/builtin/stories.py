"""Story passages and question pairs written for this project (FairytaleQA style), used by build.py.

Each entry: (context, question A, answers A, question B, answers B). Question B None makes an
identical control (B == A). The first answer of each list is the canonical one.
"""

STORIES = [
    ("A miller named Oswin lived beside a slow brown river. Each morning he fed the mill wheel with "
     "sacks of barley, and each evening he played a wooden flute for his three goats. One winter the "
     "river froze solid, so Oswin pulled the barley to the town baker on a sled.",
     "What instrument did Oswin play?", ["a wooden flute", "flute"],
     "How did Oswin take the barley to the baker when the river froze?", ["on a sled", "he pulled it on a sled", "sled"]),
    ("Princess Alba did not care for crowns. She spent her days in the castle garden, where she grew "
     "blue pumpkins as big as cartwheels. When the king's cook fell ill before the harvest feast, Alba "
     "baked a pumpkin pie so large that it fed the whole court.",
     "What colour were Alba's pumpkins?", ["blue"],
     "Who fell ill before the harvest feast?", ["the king's cook", "the cook"]),
    ("A small grey mouse called Pip lived in a teapot on a high shelf. Every night she climbed down a "
     "ladder of knotted string to look for crumbs. One night she found a silver thimble, and from then "
     "on she used it as a bucket to carry rainwater home.",
     "Where did Pip live?", ["in a teapot on a high shelf", "in a teapot", "a teapot"],
     "What did Pip use the silver thimble for?", ["as a bucket to carry rainwater", "a bucket", "to carry rainwater"]),
    ("The giant Borro was afraid of only one thing: bees. When a swarm settled in the chimney of his "
     "stone house, he hid in the cellar for three days. At last a shepherd girl named Tilde led the bees "
     "away, singing and carrying a basket of clover.",
     "What was Borro afraid of?", ["bees"],
     "What did Tilde carry to lead the swarm away?", ["a basket of clover", "clover"]),
    ("Old Marta kept a lantern in her window every night so that travellers could find the bridge. One "
     "foggy evening a merchant knocked at her door with a cart full of oranges. In thanks for the light, "
     "he left her a crate of oranges and a red wool shawl.",
     "Why did Marta keep a lantern in her window?", ["so that travellers could find the bridge",
                                                     "to help travellers find the bridge"],
     "What was the merchant's cart full of?", ["oranges"]),
    ("A young dragon named Ember could not breathe fire. Instead, whenever she sneezed, a cloud of soap "
     "bubbles floated out. The other dragons laughed at her until the village barn caught fire, and "
     "Ember's bubbles put out the flames.",
     "What came out when Ember sneezed?", ["a cloud of soap bubbles", "soap bubbles", "bubbles"],
     "What caught fire?", ["the village barn", "the barn"]),
    ("Brother Anselm copied books by candlelight in a tower of the monastery. He wrote with ink made "
     "from oak galls and a quill from a white goose. When his candle blew out one night, a family of "
     "glow-worms crawled onto his desk so that he could finish the page.",
     "What was Anselm's ink made from?", ["oak galls"],
     "Who helped Anselm finish the page when his candle blew out?", ["a family of glow-worms", "glow-worms",
                                                                    "glow worms"]),
    ("The weaver's daughter, Sunniva, wove a cloak from moonlight and thistle down. She gave it to a "
     "shivering beggar at the city gate. The next morning the beggar was gone, and in his place stood a "
     "tall birch tree wearing the cloak.",
     "What did Sunniva weave the cloak from?", ["moonlight and thistle down"],
     None, None),
    ("Every spring the otters of Reed Lake held a swimming race around the island. This year the winner "
     "was Fennick, the smallest otter, who had practised in the cold stream behind the mill. His prize "
     "was a polished river pearl.",
     "Who won the swimming race?", ["Fennick", "the smallest otter"],
     "What was the winner's prize?", ["a polished river pearl", "a river pearl", "a pearl"]),
    ("A tailor in the city of Vell sewed buttons that could sing. The mayor ordered a coat with twelve "
     "singing buttons for the spring parade. On the day of the parade the buttons sang so loudly that the "
     "horses began to dance.",
     "What was special about the tailor's buttons?", ["they could sing", "they sang"],
     "What did the horses do when the buttons sang?", ["they began to dance", "they danced", "danced"]),
    ("Grandmother Ilse told her grandson Kasper that the well in their yard granted one wish a year. "
     "Kasper wished for his lost dog, Pepper, to come home. That evening Pepper trotted through the gate "
     "with an old boot in his mouth.",
     "What was the name of Kasper's dog?", ["Pepper"],
     "What did the dog have in his mouth when he came home?", ["an old boot", "a boot", "boot"]),
    ("In a kingdom where it never rained, a girl named Lio found a cloud caught in a thorn bush. She "
     "untangled it carefully and carried it home in a fishing net. The cloud rained gently on her "
     "mother's wheat field all summer.",
     "Where did Lio find the cloud?", ["caught in a thorn bush", "in a thorn bush"],
     "What did Lio carry the cloud home in?", ["a fishing net", "fishing net"]),
    ("The toymaker Gepp built a tin soldier who could march but not turn. One day the soldier marched "
     "straight out of the shop and into the river. A stork fished him out and carried him back to the "
     "toymaker's doorstep.",
     "What could the tin soldier not do?", ["turn"],
     "Who carried the tin soldier back to the toymaker?", ["a stork", "stork"]),
    ("Two sisters, Rhoda and Ness, found a map hidden inside a loaf of bread. The map showed a path "
     "through the pine forest to a cave. In the cave they found no gold, only an old woman knitting a "
     "scarf long enough to wrap around the mountain.",
     "Where was the map hidden?", ["inside a loaf of bread", "in a loaf of bread"],
     "What was the old woman in the cave doing?", ["knitting a scarf", "knitting"]),
    ("A crow named Sable collected shiny things: keys, spoons and bottle caps. She hid them in the hollow "
     "of an elm that lightning had split. When the baker lost his wedding ring, Sable found it in her "
     "collection and dropped it on his windowsill.",
     "Where did Sable hide her shiny things?", ["in the hollow of an elm", "in a hollow elm",
                                                "the hollow of an elm"],
     "What had the baker lost?", ["his wedding ring", "a wedding ring", "ring"]),
    ("The winter king lived in a palace of ice on top of the northern hills. He was lonely, because "
     "everyone who visited him shivered and left. A boy named Aurel brought him a pot of hot soup, and "
     "the king laughed for the first time in a hundred years.",
     "What did Aurel bring the winter king?", ["a pot of hot soup", "hot soup", "soup"],
     None, None),
    ("On market day, a goose named Greta escaped from her pen and wandered into the town square. She "
     "pecked at a juggler's hat, chased the mayor's cat and finally fell asleep in a basket of apples. "
     "The farmer's son found her there and carried her home at sunset.",
     "Whose cat did Greta chase?", ["the mayor's cat", "the mayor's"],
     "Where did Greta fall asleep?", ["in a basket of apples", "a basket of apples"]),
    ("A fisherman named Corin caught a golden fish that could speak. It begged to be set free and "
     "promised him a full net every day. Corin let it go, and from then on his nets were always full, "
     "though only of seaweed on Sundays.",
     "What did the golden fish promise Corin?", ["a full net every day", "a full net"],
     "What did Corin's nets hold on Sundays?", ["only seaweed", "seaweed"]),
    ("The clockmaker's apprentice, Wren, forgot to wind the great town clock one night. In the morning "
     "everyone in town slept late, because no bell had rung. Wren climbed the tower and pulled the bell "
     "rope herself until the whole town woke up.",
     "What did Wren forget to do?", ["wind the great town clock", "to wind the town clock", "wind the clock"],
     "How did Wren wake the town?", ["she pulled the bell rope", "by pulling the bell rope", "pulled the bell rope"]),
    ("Deep in the forest lived a bear who loved to paint. He used crushed berries for red, moss for "
     "green and the sky's reflection in a puddle for blue. His finest painting hung in the hollow of an "
     "oak, where the squirrels came to admire it.",
     "What did the bear use for red?", ["crushed berries", "berries"],
     "Where did the bear's finest painting hang?", ["in the hollow of an oak", "the hollow of an oak"]),
    ("A lamplighter named Bram walked the streets of Hollin every evening with a long pole. One night he "
     "found a lost owl sitting on the last lamp, too tired to fly. Bram let the owl ride on his shoulder "
     "for the rest of his round and left it in the church bell tower.",
     "What did Bram carry on his evening walks?", ["a long pole", "a pole"],
     "Where did Bram leave the owl?", ["in the church bell tower", "the bell tower"]),
    ("A snail named Loma wanted to see the sea. The journey took her a whole summer, and she travelled "
     "on the backs of a tortoise, a cart and finally a seagull. When she arrived, she said the sea was "
     "just a very large puddle and went home.",
     "What did Loma want to see?", ["the sea"],
     "What did Loma say the sea was?", ["a very large puddle", "just a very large puddle", "a large puddle"]),
    ("The queen of the island had a garden of glass flowers that chimed in the wind. A storm once "
     "shattered every flower. Her gardener, Tamsin, gathered the pieces and melted them into a single "
     "glass bell that still rings in the harbour.",
     "What did the glass flowers do in the wind?", ["they chimed", "chimed"],
     "What did Tamsin make from the broken pieces?", ["a single glass bell", "a glass bell", "a bell"]),
    ("Every night the baker's cat, Miso, slept on the warm bread oven. One night she smelled smoke and "
     "yowled until the baker woke. The baker put out the fire and rewarded Miso with a saucer of cream "
     "and a cushion of her own.",
     "What did Miso do when she smelled smoke?", ["she yowled until the baker woke", "she yowled", "yowled"],
     None, None),
    ("A boy named Teo planted a single bean in a cracked flowerpot. The plant grew not upward but "
     "sideways, along the fence and around the whole village. The neighbours hung their washing on it, "
     "and it became the longest clothesline in the valley.",
     "Where did Teo plant the bean?", ["in a cracked flowerpot", "a cracked flowerpot", "a flowerpot"],
     "What did the neighbours use the plant for?", ["to hang their washing on", "as a clothesline",
                                                    "hanging washing"]),
    ("The mountain goats of Skarn held a council every autumn on the flat rock above the glacier. This "
     "year they argued about whether to move south. The eldest goat, Hild, settled the matter by "
     "pointing out that the south had no mountains.",
     "Where did the goats hold their council?", ["on the flat rock above the glacier", "the flat rock"],
     "Who settled the argument?", ["Hild", "the eldest goat"]),
    ("A sailor's parrot named Captain Beak could say only one word: Biscuit. When pirates boarded the "
     "ship at night, the parrot shouted it so fiercely that they thought a great dog was aboard, and "
     "they fled back to their own boat.",
     "What was the only word the parrot could say?", ["Biscuit"],
     "Why did the pirates flee?", ["they thought a great dog was aboard", "they thought a dog was aboard",
                                   "they thought there was a dog on the ship"]),
    ("Once a year the moon came down to the lake to drink. A fox named Rusk hid in the reeds to watch. "
     "He saw the moon's reflection shiver, and when the moon rose again the lake was full of tiny silver "
     "fish.",
     "Who hid in the reeds to watch the moon?", ["a fox named Rusk", "Rusk"],
     "What was the lake full of when the moon rose again?", ["tiny silver fish", "silver fish"]),
    ("A girl named Edda kept a diary that wrote back. When she wrote that she was sad, the diary drew "
     "her a picture of a smiling cat. When she wrote that she was bored, it gave her a riddle about a "
     "river.",
     "What did the diary draw when Edda was sad?", ["a picture of a smiling cat", "a smiling cat"],
     "What did the diary give Edda when she was bored?", ["a riddle about a river", "a riddle"]),
    ("The king's jester, Fabo, lost his bells on the way to the castle. Without them nobody laughed at "
     "his jokes. A tinker mended an old cowbell for him, and the court laughed harder than ever because "
     "it clanged like a kitchen pot.",
     "What did Fabo lose on the way to the castle?", ["his bells", "bells"],
     "What did the tinker mend for Fabo?", ["an old cowbell", "a cowbell"]),
    ("A hedgehog named Bristle wanted to hug his friend, the balloon seller. Every time he tried, a "
     "balloon popped. In the end the balloon seller knitted him a woollen sweater to wear over his "
     "spines, and the hug was a success.",
     "What happened every time Bristle tried to hug his friend?", ["a balloon popped", "balloons popped"],
     "What did the balloon seller make for Bristle?", ["a woollen sweater", "a sweater"]),
    ("High in the hills, an old shepherd named Gorm carved whistles from willow branches. Each whistle "
     "called a different thing: one the sheep, one the crows and one the north wind. He lost the wind "
     "whistle in a snowdrift, and since then the north wind comes whenever it likes.",
     "Where did Gorm lose the wind whistle?", ["in a snowdrift", "a snowdrift"],
     None, None),
    ("The youngest of seven brothers, Elric, was sent to fetch water from the well at the end of the "
     "world. On the way he shared his bread with a starving wolf. At the well the wolf warned him not to "
     "drink from the golden cup but from the wooden one.",
     "What did Elric share with the wolf?", ["his bread", "bread"],
     "Which cup did the wolf tell Elric to drink from?", ["the wooden one", "the wooden cup", "wooden"]),
    ("A river spirit named Olwen lived under the old stone bridge. She let travellers cross only if they "
     "told her a story she had never heard. A miller's boy told her about the day his donkey learned to "
     "climb a ladder, and she laughed so much that the river overflowed.",
     "Where did Olwen live?", ["under the old stone bridge", "under the bridge"],
     "What happened when Olwen laughed?", ["the river overflowed", "river overflowed"]),
    ("In the village of Larrow, the church bell was cast from a hundred melted spoons. The spoons came "
     "from every family in the village, so the bell rang a little differently for each of them. The "
     "blacksmith said it sounded like soup.",
     "What was the church bell cast from?", ["a hundred melted spoons", "melted spoons", "spoons"],
     "What did the blacksmith say the bell sounded like?", ["soup"]),
    ("A small cloud named Nim could not keep up with the others. Left behind over a desert, he rained "
     "all his water on a single cactus. The cactus bloomed with a pink flower, and travellers still call "
     "that place Nim's Rest.",
     "What did the cactus bloom with?", ["a pink flower", "pink flower"],
     "What do travellers call that place?", ["Nim's Rest"]),
    ("The baker of Castor Street made bread shaped like animals. The children lined up for the bread "
     "bears, but the mayor always ordered a bread crocodile. One morning the crocodile came out of the "
     "oven with a real smile.",
     "What did the mayor always order?", ["a bread crocodile", "crocodile"],
     "What did the children line up for?", ["the bread bears", "bread bears"]),
    ("A knight called Sir Pellam was afraid of the dark. He carried a jar of fireflies instead of a "
     "sword. When a troll blocked the road one night, Pellam opened the jar, and the dazzled troll ran "
     "back into the forest.",
     "What did Sir Pellam carry instead of a sword?", ["a jar of fireflies", "fireflies"],
     "What blocked the road at night?", ["a troll", "troll"]),
    ("Every evening a little girl named Ona fed the ducks at the pond with crusts from her grandmother's "
     "kitchen. One evening a swan followed her home and refused to leave. Her grandmother named the swan "
     "Duchess and gave it the old bathtub in the yard.",
     "What did the grandmother name the swan?", ["Duchess"],
     None, None),
    ("The wind of the western sea had a cousin who lived in a seashell. Whenever a child held the shell "
     "to an ear, the cousin whispered the name of a faraway island. A boy named Piet wrote down every "
     "name and later sailed to all of those islands.",
     "Where did the wind's cousin live?", ["in a seashell", "a seashell"],
     "What did Piet do with the names he heard?", ["wrote them down and sailed to the islands",
                                                    "wrote them down", "sailed to all of the islands"]),
]
